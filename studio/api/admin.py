"""Administrator operations under ``/v1/admin``, for ``admin``-scope tokens only: users
(with their limits and usage), grants, per-user limit overrides, redeem codes, nodes."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from backend import accounts, codes, ledger, limits
from backend.tokens import TokenUser

from .auth import admin
from .routes import ERRORS
from .schemas import BalanceOut, CodesIn, CodesOut, GrantIn, LimitsIn, NodeList, NodeOut, UserList, UserOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERRORS)


def _user_out(request: Request, user: object) -> UserOut:
    backend = request.app.state.studio.backend
    uid = user.id  # type: ignore[attr-defined]
    return UserOut(name=user.name, role=user.role, disabled=user.disabled, balance=user.balance,  # type: ignore[attr-defined]
                   limits=limits.effective(backend.db, backend.settings, uid),
                   usage=asdict(limits.usage(backend.db, uid)))


@router.get("/users", response_model=UserList, summary="Every user with balance, limits and usage")
def users(request: Request, _admin: TokenUser = Depends(admin)) -> UserList:
    db = request.app.state.studio.backend.db
    return UserList(users=[_user_out(request, u) for u in accounts.list_users(db)])


@router.post("/users/{name}/grant", response_model=BalanceOut, summary="Grant credits to a user")
def grant(name: str, body: GrantIn, request: Request, caller: TokenUser = Depends(admin)) -> BalanceOut:
    db = request.app.state.studio.backend.db
    with db.write() as s:
        user = accounts.find_user(s, name)
        entry = ledger.credit(s, user.id, body.amount, kind="grant", note=body.note, actor=caller.name)
    return BalanceOut(balance=entry.balance_after)


@router.put("/users/{name}/limits", response_model=UserOut, summary="Override a user's limits (null: role default)")
def set_limits(name: str, body: LimitsIn, request: Request, _admin: TokenUser = Depends(admin)) -> UserOut:
    db = request.app.state.studio.backend.db
    with db.read() as s:
        user = accounts.find_user(s, name)
    for limit, value in body.limits.items():
        limits.set_override(db, user.id, limit, value)
    with db.read() as s:
        return _user_out(request, accounts.find_user(s, name))


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
