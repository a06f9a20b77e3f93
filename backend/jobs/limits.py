"""Per-user limits, enforced by the backend so that the studio, the API and the CLI obey
the same ones (docs/api.md):

- ``max_waiting_jobs``: the user's jobs waiting in the backlog;
- ``max_running_jobs``: the user's jobs on nodes (dispatched, submitted or running);
- ``submits_per_minute``: jobs submitted in a sliding minute (a :mod:`backend.throttle` row);
- ``daily_spend_cap``: credits charged (less refunds) since midnight UTC;
- ``storage_quota_mb``: bytes of the user's own uploads.

Each role has its defaults in :class:`~backend.config.Settings`: the settings of these
names for creators, the ones prefixed ``admin_`` for administrators (none by default).
Either may be overridden per user (``user_limits`` rows, the admin page and API, and
``python -m backend limits``). 0 means no limit. A refusal is a :class:`LimitReached`
naming the limit and when it frees up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from backend.accounts import throttle
from backend.assets import maintenance
from backend.config import LIMITS, Settings
from backend.db import Database
from backend.db.api_models import UserLimit
from backend.db.models import Job, LedgerEntry, User, utcnow
from backend.errors import InvalidParameter, LimitReached, NotFound, RateLimited
from backend.jobs.state import ON_NODE, JobState

NAMES = LIMITS
ON_NODES = ON_NODE
SUBMIT_WINDOW = dt.timedelta(minutes=1)
#: When a job limit frees up is unknown until a job ends; this is the hint given.
JOB_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class Usage:
    """Where a user stands against each limit."""

    waiting: int
    running: int
    submits_last_minute: int
    spent_today: int
    storage_bytes: int


def defaults(settings: Settings, role: str) -> dict[str, int]:
    """The limits of ``role`` ("creator" or "admin") before any per-user override."""
    prefix = "admin_" if role == "admin" else ""
    return {name: int(getattr(settings, prefix + name)) for name in NAMES}


def overrides(db: Database, user_id: int) -> dict[str, int]:
    with db.read() as s:
        return {name: value for name, value in s.execute(select(UserLimit.name, UserLimit.value)
                                                          .where(UserLimit.user_id == user_id))}


def effective(db: Database, settings: Settings, user_id: int) -> dict[str, int]:
    """The limits that apply to ``user_id`` (0: none)."""
    with db.read() as s:
        role = s.scalar(select(User.role).where(User.id == user_id))
    if role is None:
        raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
    return {**defaults(settings, role), **overrides(db, user_id)}


def set_override(db: Database, user_id: int, name: str, value: int | None) -> None:
    """Override one limit for a user; ``None`` goes back to the role's default."""
    if name not in NAMES:
        raise InvalidParameter(f"Unknown limit {name!r}; limits are {', '.join(NAMES)}.", param="name")
    if value is not None and (not isinstance(value, int) or value < 0):
        raise InvalidParameter("A limit is a whole number, 0 for none.", zh="限额须为整数，0 表示不限。", param="value")
    with db.write() as s:
        if s.get(User, user_id) is None:
            raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
        s.execute(delete(UserLimit).where(UserLimit.user_id == user_id, UserLimit.name == name))
        if value is not None:
            s.add(UserLimit(user_id=user_id, name=name, value=value, updated_at=utcnow()))


def _submit_key(user_id: int) -> str:
    return f"submit:user:{user_id}"


def _day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def usage(db: Database, user_id: int, *, now: dt.datetime | None = None) -> Usage:
    now = now or utcnow()
    with db.read() as s:
        states = dict(s.execute(select(Job.state, func.count()).where(Job.user_id == user_id,
                                                                      Job.state.in_((JobState.QUEUED, *ON_NODES)))
                                .group_by(Job.state)).all())
        spent = s.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0))
                         .where(LedgerEntry.user_id == user_id, LedgerEntry.kind.in_(("charge", "refund")),
                                LedgerEntry.created_at >= _day_start(now)))
    stored = maintenance.usage(db, user_id=user_id)
    return Usage(waiting=int(states.get(JobState.QUEUED, 0)), running=sum(int(states.get(k, 0)) for k in ON_NODES),
                 submits_last_minute=throttle.count(db, _submit_key(user_id), _submit_limit(0), now=now),
                 spent_today=-int(spent or 0), storage_bytes=stored[0].upload_bytes if stored else 0)


def _submit_limit(allowed: int) -> throttle.Limit:
    return throttle.Limit(allowed, SUBMIT_WINDOW, what=("submits", "提交"))


def check_submit(db: Database, settings: Settings, user_id: int, cost: int, *, now: dt.datetime | None = None) -> None:
    """:func:`check_submit_in` in a transaction of its own."""
    with db.write() as s:
        check_submit_in(s, settings, user_id, cost, now=now)


def check_submit_in(s: Session, settings: Settings, user_id: int, cost: int, *, now: dt.datetime | None = None) -> None:
    """Refuse a new job of ``cost`` credits with :class:`LimitReached` if any limit is at
    its bound; otherwise count the submit (``submits_per_minute``) in the caller's writing
    transaction, which then stores the job: a refused or rolled back submit counts nothing.

    When a limit on jobs or spending is set, the user's submits are first serialized (a
    lock on their submit counter's row, on PostgreSQL; SQLite's writers are serial
    already), so each counts the jobs the previous ones made: a limit holds exactly at its
    bound under parallel submits too. That lock is not the user's row, which the
    dispatcher's fairness bookkeeping updates: a submit never holds up a dispatch pass.
    Without such a limit (the default) nothing is locked and no usage is read.
    """
    now = now or utcnow()
    row = s.execute(_ROLE_AND_OVERRIDES, {"user_id": user_id}).first()
    if row is None:
        raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
    limits = defaults(settings, row[0])
    limits.update({name: value for name, value in zip(NAMES, row[1:]) if value is not None})
    waiting, running, cap = limits["max_waiting_jobs"], limits["max_running_jobs"], limits["daily_spend_cap"]
    if waiting or running or cap:
        throttle.lock(s, _submit_key(user_id), now=now)
        used_waiting, used_running, spent_today = _submit_usage(s, user_id, now)
        if waiting and used_waiting >= waiting:
            raise LimitReached(f"You have {used_waiting} jobs waiting, the most allowed (max_waiting_jobs). "
                               "Submit again when one has started.",
                               zh=f"您已有 {used_waiting} 个任务在排队，已达上限（max_waiting_jobs）。请等其中一个开始后再提交。",
                               limit="max_waiting_jobs", retry_after=JOB_RETRY_SECONDS)
        if running and used_running >= running:
            raise LimitReached(f"You have {used_running} jobs running, the most allowed (max_running_jobs). "
                               "Submit again when one has finished.",
                               zh=f"您已有 {used_running} 个任务在运行，已达上限（max_running_jobs）。请等其中一个结束后再提交。",
                               limit="max_running_jobs", retry_after=JOB_RETRY_SECONDS)
        if cap and spent_today + cost > cap:
            midnight = _day_start(now) + dt.timedelta(days=1)
            raise LimitReached(f"This job costs {cost} credits; you have spent {spent_today} of your daily "
                               f"{cap} (daily_spend_cap). It frees up at midnight UTC.",
                               zh=f"本任务需 {cost} 积分；今日已花费 {spent_today}，每日上限 {cap}（daily_spend_cap）。"
                                  "北京时间早上 8 点（UTC 零点）重置。",
                               limit="daily_spend_cap", retry_after=max(1.0, (midnight - now).total_seconds()))
    per_minute = limits["submits_per_minute"]
    if not per_minute:
        return
    try:
        throttle.claim_in(s, _submit_key(user_id), _submit_limit(per_minute), now=now)
    except RateLimited as exc:
        retry = exc.retry_after
        raise LimitReached(f"You submitted {per_minute} jobs in the last minute, the most allowed "
                           f"(submits_per_minute). Try again in {round(retry)} s.",
                           zh=f"您在一分钟内已提交 {per_minute} 个任务，已达上限（submits_per_minute）。请 {round(retry)} 秒后再试。",
                           limit="submits_per_minute", retry_after=retry) from None


#: A user's role and their override of each limit (NULL: none), built once: building the
#: statement cost more than running it.
_ROLE_AND_OVERRIDES = select(User.role, *(
    select(UserLimit.value).where(UserLimit.user_id == bindparam("user_id"), UserLimit.name == name).scalar_subquery()
    for name in NAMES)).where(User.id == bindparam("user_id"))


def _submit_usage(s: Session, user_id: int, now: dt.datetime) -> tuple[int, int, int]:
    """Jobs waiting, jobs on nodes and credits spent today (as in :func:`usage`), in one
    statement of the caller's transaction."""
    def jobs_in(states: tuple[str, ...]) -> Any:
        return (select(func.count()).select_from(Job).where(Job.user_id == user_id, Job.state.in_(states))
                .scalar_subquery())

    spent = (select(func.coalesce(func.sum(LedgerEntry.amount), 0))
             .where(LedgerEntry.user_id == user_id, LedgerEntry.kind.in_(("charge", "refund")),
                    LedgerEntry.created_at >= _day_start(now)).scalar_subquery())
    waiting, running, spent_sum = s.execute(select(jobs_in((JobState.QUEUED.value,)),
                                                   jobs_in(tuple(state.value for state in ON_NODES)), spent)).one()
    return int(waiting), int(running), -int(spent_sum or 0)


def check_storage(db: Database, settings: Settings, user_id: int, incoming: int) -> None:
    """Refuse an upload of ``incoming`` bytes that would take the user past their quota."""
    quota_mb = effective(db, settings, user_id)["storage_quota_mb"]
    if not quota_mb:
        return
    used = usage(db, user_id).storage_bytes
    quota = quota_mb * 1024 * 1024
    if used + incoming > quota:
        raise LimitReached(f"Your uploads use {used / 1048576:.1f} MB of your {quota_mb} MB (storage_quota_mb); "
                           "this file does not fit.",
                           zh=f"您的上传已占用 {used / 1048576:.1f} MB，配额为 {quota_mb} MB（storage_quota_mb），放不下此文件。",
                           limit="storage_quota_mb")
