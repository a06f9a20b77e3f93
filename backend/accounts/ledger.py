"""The credits ledger: append-only rows, a cached balance, and the invariant checker.

Every movement is one conditional UPDATE of ``users.balance`` plus one ledger row in the
same transaction. The condition (``balance + amount >= 0``) is evaluated by the database
against the current row, so concurrent debits can never overdraw an account: on SQLite
writers are serialized by ``BEGIN IMMEDIATE``, on PostgreSQL a waiting UPDATE re-checks its
WHERE clause after the other transaction commits.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BindParameter, Table, bindparam, case, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db import Database
from backend.db.models import Job, LedgerEntry, User, utcnow
from backend.errors import InsufficientCredits, InvalidParameter, NotFound, PermissionDenied
from backend.jobs.state import REFUNDED

USER_KINDS = ("grant", "recharge", "redeem", "adjust")


def credit(
    s: Session,
    user_id: int,
    amount: int,
    *,
    kind: str,
    note: str | None = None,
    actor: str | None = None,
    code_id: int | None = None,
) -> LedgerEntry:
    """Add ``amount`` (negative only for ``adjust``) to a user's balance, with its ledger row."""
    if kind not in USER_KINDS:
        raise InvalidParameter(f"Unknown credit kind {kind!r}; use one of {', '.join(USER_KINDS)}.", param="kind")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidParameter("Credit amounts are whole numbers.", zh="积分数量必须是整数。", param="amount")
    if amount == 0 or (amount < 0 and kind != "adjust"):
        raise InvalidParameter(
            f"A {kind} must add a positive amount of credits.", zh="发放的积分必须为正数。", param="amount"
        )
    new_balance = s.scalar(
        update(User)
        .where(User.id == user_id, User.balance + amount >= 0)
        .values(balance=User.balance + amount)
        .returning(User.balance)
    )
    if new_balance is None:
        if s.get(User, user_id) is None:
            raise NotFound(f"No user with id {user_id}.")
        raise InsufficientCredits(
            f"The adjustment of {amount} would make the balance negative.", zh=f"调整 {amount} 会使余额为负。"
        )
    entry = LedgerEntry(
        user_id=user_id, kind=kind, amount=amount, balance_after=new_balance, note=note, actor=actor, code_id=code_id
    )
    s.add(entry)
    s.flush()
    return entry


_users, _ledger = cast(Table, User.__table__), cast(Table, LedgerEntry.__table__)
# The charge's statements, built once (values bound at execution): every submit runs them.
# No parameter may be named after a column of ``users``: executing a Core UPDATE with such
# a name would add it to the SET clause.
_DEBIT = (update(_users)
          .where(_users.c.id == bindparam("user_id"), _users.c.balance >= bindparam("cost"),
                 _users.c.disabled.is_not(True))
          .values(balance=_users.c.balance - bindparam("cost"))
          .returning(_users.c.balance))
#: The ledger row's columns and the parameter each takes (``created_at`` is a column of users).
_ROW_PARAMS = {"user_id": "user_id", "amount": "amount", "job_id": "job_id", "created_at": "at"}


def _row_param(column: str) -> BindParameter[Any]:
    return bindparam(_ROW_PARAMS[column], type_=_ledger.c[column].type)


_CHARGE_ROW = insert(_ledger).values(kind="charge", balance_after=bindparam("balance_after"),
                                     **{column: _row_param(column) for column in _ROW_PARAMS})
_debited = _DEBIT.cte("debited")
#: The debit and its ledger row in one statement (PostgreSQL): a debit that matched no row writes none.
_CHARGE = (insert(_ledger)
           .from_select(["kind", "balance_after", *_ROW_PARAMS],
                        select(literal("charge", _ledger.c.kind.type), _debited.c.balance,
                               *(_row_param(column) for column in _ROW_PARAMS)))
           .add_cte(_debited)
           .returning(_ledger.c.balance_after))


def charge(s: Session, user_id: int, job_id: str, cost: int) -> int:
    """Debit ``cost`` for ``job_id`` if the account is enabled and its balance covers it,
    and write its ledger row; the balance after. Else raise PermissionDenied or
    InsufficientCredits. Both conditions are in the one UPDATE, so an enabled account with
    credits costs no read before it; on PostgreSQL the UPDATE and the ledger row are one
    statement (a debit that matched no row writes none), so a submit's charge is one round
    trip."""
    if cost < 0:
        raise InvalidParameter("A price cannot be negative.", param="cost")
    values = {"user_id": user_id, "cost": cost, "amount": -cost, "job_id": job_id, "at": utcnow()}
    if s.get_bind().dialect.name == "postgresql":
        new_balance = s.scalar(_CHARGE, values)
    else:  # SQLite has no UPDATE inside WITH: two statements
        new_balance = s.scalar(_DEBIT, values)
        if new_balance is not None:
            s.execute(_CHARGE_ROW, {**values, "balance_after": new_balance})
    if new_balance is None:
        found = s.execute(select(User.balance, User.disabled).where(User.id == user_id)).first()
        if found is None:
            raise NotFound(f"No user with id {user_id}.")
        balance, disabled = found
        if disabled:
            raise PermissionDenied("This account is disabled.", zh="该账户已被停用。")
        raise InsufficientCredits(
            f"This costs {cost} credits but your balance is {balance}. Redeem a code or ask an administrator for credits.",
            zh=f"本次需要 {cost} 积分，当前余额为 {balance}。请兑换积分码或联系管理员充值。",
        )
    return new_balance


def refund(s: Session, job_id: str, *, note: str | None = None) -> int:
    """Give back what ``job_id`` was charged, once. Returns the amount (0 if already done)."""
    charged = s.scalar(select(LedgerEntry).where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "charge"))
    if charged is None or charged.amount == 0:
        return 0
    amount = -charged.amount
    # A savepoint, so that losing the race on UNIQUE(job_id, kind) undoes only this refund
    # and leaves the caller's transaction usable.
    try:
        with s.begin_nested():
            new_balance = s.scalar(
                update(User).where(User.id == charged.user_id).values(balance=User.balance + amount).returning(User.balance)
            )
            s.add(
                LedgerEntry(
                    user_id=charged.user_id, kind="refund", amount=amount, balance_after=new_balance, job_id=job_id, note=note
                )
            )
            s.flush()
    except IntegrityError:
        return 0
    return amount


def refunded(db: Database, job_id: str) -> int:
    """Credits given back for ``job_id`` (0 if none)."""
    with db.read() as s:
        amount = s.scalar(select(LedgerEntry.amount).where(LedgerEntry.job_id == job_id, LedgerEntry.kind == "refund"))
    return int(amount or 0)


def balance(s: Session, user_id: int) -> int:
    value = s.scalar(select(User.balance).where(User.id == user_id))
    if value is None:
        raise NotFound(f"No user with id {user_id}.")
    return value


def entries(s: Session, user_id: int, *, limit: int = 100, before: int | None = None) -> list[LedgerEntry]:
    """The newest ``limit`` ledger rows of a user (older than row ``before``), newest first."""
    stmt = select(LedgerEntry).where(LedgerEntry.user_id == user_id)
    if before is not None:
        stmt = stmt.where(LedgerEntry.id < before)
    stmt = stmt.order_by(LedgerEntry.id.desc()).limit(limit)
    return list(s.scalars(stmt))


def balance_of(db: Database, user_id: int) -> int:
    """The user's balance now."""
    with db.read() as s:
        return balance(s, user_id)


@dataclass(frozen=True)
class LedgerLine:
    """One ledger row for display, with the workflow of its job (if it has one)."""

    id: int
    kind: str
    amount: int
    balance_after: int
    job_id: str | None
    workflow: str | None
    actor: str | None
    note: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class LedgerPage:
    balance: int
    lines: list[LedgerLine]


def ledger_page(db: Database, user_id: int, *, limit: int = 100, before: int | None = None) -> LedgerPage:
    """The user's balance and newest ``limit`` ledger rows (older than row ``before``), newest first."""
    with db.read() as s:
        amount = balance(s, user_id)
        rows = entries(s, user_id, limit=limit, before=before)
        ids = {e.job_id for e in rows if e.job_id}
        workflows = dict(s.execute(select(Job.id, Job.workflow).where(Job.id.in_(ids))).all()) if ids else {}
    lines = [LedgerLine(id=e.id, kind=e.kind, amount=e.amount, balance_after=e.balance_after, job_id=e.job_id,
                        workflow=workflows.get(e.job_id) if e.job_id else None, actor=e.actor, note=e.note,
                        created_at=e.created_at) for e in rows]
    return LedgerPage(balance=amount, lines=lines)


@dataclass(frozen=True)
class Problem:
    """One broken invariant, in words an operator can act on."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def verify(db: Database) -> list[Problem]:
    """Check every money invariant; an empty list means the books balance.

    - each balance equals the sum of its user's ledger and is not negative;
    - each user's ``balance_after`` column is the running sum of the amounts;
    - each job has exactly one charge of ``-cost``; jobs that failed or were cancelled
      sum to 0 (refunded), every other job sums to ``-cost``;
    - rows tied to a job are charges or refunds only.
    """
    problems: list[Problem] = []
    with db.read() as s:
        sums = (
            select(LedgerEntry.user_id, func.coalesce(func.sum(LedgerEntry.amount), 0).label("total"))
            .group_by(LedgerEntry.user_id)
            .subquery()
        )
        rows = s.execute(
            select(User.name, User.balance, func.coalesce(sums.c.total, 0)).outerjoin(sums, sums.c.user_id == User.id)
        )
        for name, bal, total in rows:
            if bal != total:
                problems.append(Problem(f"user {name}", f"balance {bal} but ledger sums to {total}"))
            if bal < 0:
                problems.append(Problem(f"user {name}", f"negative balance {bal}"))

        running: dict[int, int] = {}
        for entry_id, user_id, amount, after in s.execute(
            select(LedgerEntry.id, LedgerEntry.user_id, LedgerEntry.amount, LedgerEntry.balance_after).order_by(
                LedgerEntry.id
            )
        ):
            running[user_id] = running.get(user_id, 0) + amount
            if running[user_id] != after:
                problems.append(
                    Problem(f"ledger row {entry_id}", f"balance_after {after} but the running sum is {running[user_id]}")
                )

        job_sums = (
            select(
                LedgerEntry.job_id,
                func.sum(LedgerEntry.amount).label("total"),
                func.sum(case((LedgerEntry.kind == "charge", 1), else_=0)).label("charges"),
                func.sum(case((LedgerEntry.kind == "charge", LedgerEntry.amount), else_=0)).label("charged"),
                func.sum(case((LedgerEntry.kind.in_(("charge", "refund")), 0), else_=1)).label("foreign"),
            )
            .where(LedgerEntry.job_id.is_not(None))
            .group_by(LedgerEntry.job_id)
            .subquery()
        )
        for job_id, state, cost, total, charges, charged, foreign in s.execute(
            select(
                Job.id, Job.state, Job.cost, job_sums.c.total, job_sums.c.charges, job_sums.c.charged, job_sums.c.foreign
            ).outerjoin(job_sums, job_sums.c.job_id == Job.id)
        ):
            subject = f"job {job_id}"
            if not charges:
                problems.append(Problem(subject, "has no charge"))
                continue
            if foreign:
                problems.append(Problem(subject, "has ledger rows other than charge and refund"))
            if charged != -cost:
                problems.append(Problem(subject, f"charged {-charged} but costs {cost}"))
            expected = 0 if state in REFUNDED else -cost
            if total != expected:
                problems.append(Problem(subject, f"is {state} and its entries sum to {total}, expected {expected}"))
    return problems
