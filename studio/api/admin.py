"""Administrator operations under ``/v1/admin``, for ``admin``-scope tokens only: users
(with their limits and usage), grants, per-user limit overrides, redeem codes, nodes."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from backend import accounts
from backend.accounts import codes
from backend.accounts.tokens import TokenUser
from backend.jobs import limits

from .auth import admin
from .routes import ERRORS
from .schemas import BalanceOut, CodesIn, CodesOut, GrantIn, LimitsIn, NodeList, NodeOut, UserList, UserOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERRORS)


def _user_out(request: Request, user: accounts.UserRecord) -> UserOut:
    backend = request.app.state.studio.backend
    return UserOut(name=user.name, role=user.role, disabled=user.disabled, balance=user.balance,
                   limits=limits.effective(backend.db, backend.settings, user.id),
                   usage=asdict(limits.usage(backend.db, user.id)))


@router.get("/users", response_model=UserList, summary="Every user with balance, limits and usage")
def users(request: Request, _admin: TokenUser = Depends(admin)) -> UserList:
    db = request.app.state.studio.backend.db
    return UserList(users=[_user_out(request, u) for u in accounts.list_users(db)])


@router.post("/users/{name}/grant", response_model=BalanceOut, summary="Grant credits to a user")
def grant(name: str, body: GrantIn, request: Request, caller: TokenUser = Depends(admin)) -> BalanceOut:
    user = accounts.grant(request.app.state.studio.backend.db, name, body.amount, note=body.note, actor=caller.name)
    return BalanceOut(balance=user.balance)


@router.put("/users/{name}/limits", response_model=UserOut, summary="Override a user's limits (null: role default)")
def set_limits(name: str, body: LimitsIn, request: Request, _admin: TokenUser = Depends(admin)) -> UserOut:
    db = request.app.state.studio.backend.db
    user = accounts.user_named(db, name)
    for limit, value in body.limits.items():
        limits.set_override(db, user.id, limit, value)
    return _user_out(request, accounts.user_named(db, name))


@router.post("/codes", response_model=CodesOut, status_code=201, summary="Make a batch of redeem codes (shown once)")
def make_codes(body: CodesIn, request: Request, caller: TokenUser = Depends(admin)) -> CodesOut:
    batch = codes.create_batch(request.app.state.studio.backend.db, body.count, body.credits,
                               expires_days=body.expires_days, created_by=caller.user_id)
    return CodesOut(batch=batch.batch, credits=batch.credits, expires_at=batch.expires_at, codes=batch.codes)


@router.get("/nodes", response_model=NodeList, summary="The nodes online now")
def nodes(request: Request, _admin: TokenUser = Depends(admin)) -> NodeList:
    views = request.app.state.studio.backend.registry.nodes()
    return NodeList(nodes=[NodeOut(node_id=v.state.node_id, label=v.state.label, simulated=v.state.simulated,
                                   free_slots=v.free_slots, queue_remaining=v.state.queue_remaining,
                                   running_job=v.state.running_job) for v in views])
