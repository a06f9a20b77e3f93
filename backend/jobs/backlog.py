"""The central backlog: queued jobs in the order they should get a node.

Fairness: the user served least recently goes first, and within a user the
oldest job first. Reading only the first few queued jobs of each user keeps the query
small however long one user's queue is, and means a user with fifty queued jobs never
hides another user's one job behind them.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import deque
from typing import Any

from sqlalchemy import Select, Subquery, func, select, true
from sqlalchemy.orm import aliased

from backend.db import Database
from backend.db.models import Job, User
from backend.jobs.state import JobState

#: Jobs read per user per pass; more than one pass can usually place.
PER_USER = 4
_NEVER = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def lines(db: Database, *, per_user: int = PER_USER, limit: int | None = None) -> list[deque[Job]]:
    """One line of queued jobs per user (oldest first), users least recently served first.

    ``limit`` caps the jobs read in all: they are the first ``limit`` in the order a pass
    takes them (every user's first job, then every user's second, ...), so a pass that
    can fill a few slots reads a few jobs, however long the backlog behind them.
    """
    with db.read() as s:
        rows = list(s.scalars(_statement(s.get_bind().dialect.name, per_user, limit)))
    by_user: dict[int, deque[Job]] = {}
    for row in rows:  # users appear in their turn's order with their first job
        by_user.setdefault(row.user_id, deque()).append(row)
    return list(by_user.values())


@functools.lru_cache(maxsize=128)
def _statement(dialect: str, per_user: int, limit: int | None) -> Select[Any]:
    """The backlog read, built once per shape: building the recursive statement costs
    about 2 ms of Python, more than PostgreSQL takes to run it on a short backlog, and
    every dispatch pass reads the backlog. Statements are immutable, so threads share them."""
    stmt = _by_probing(per_user) if dialect == "postgresql" else _by_window(per_user)
    return stmt if limit is None else stmt.limit(limit)


def _in_turn(stmt: Select[Any], job: Any, ranked: Subquery, per_user: int) -> Select[Any]:
    """``stmt`` selecting ``job``, numbered in ``ranked`` (``n``: the place in its user's
    line; ``first``: when that user's oldest queued job came), in the order a pass takes them."""
    return (stmt.join(User, User.id == job.user_id)
            .where(ranked.c.n <= per_user)
            .order_by(ranked.c.n, func.coalesce(User.last_served_at, _NEVER), ranked.c.first, job.user_id))


def _by_window(per_user: int) -> Select[Any]:
    """Number every queued job (by id alone), then read the whole rows of those kept: the
    whole backlog is read (SQLite, where embedded backlogs are short and there is no LATERAL)."""
    ranked = (
        select(Job.id,
               func.row_number().over(partition_by=Job.user_id, order_by=(Job.created_at, Job.id)).label("n"),
               func.min(Job.created_at).over(partition_by=Job.user_id).label("first"))
        .where(Job.state == JobState.QUEUED)
        .subquery()
    )
    return _in_turn(select(Job).join(ranked, ranked.c.id == Job.id), Job, ranked, per_user)


def _by_probing(per_user: int) -> Select[Any]:
    """Find the waiting users by skipping through ``ix_jobs_backlog`` (one probe per user,
    a recursive query: PostgreSQL has no skip scan), then read each one's first
    ``per_user`` jobs, whole, by another probe: the cost grows with the users waiting, not
    with their jobs."""
    jobs = Job.__table__
    waiting = (select(jobs.c.user_id).where(jobs.c.state == JobState.QUEUED).order_by(jobs.c.user_id).limit(1)
               .cte("waiting", recursive=True))
    after = jobs.alias("after")
    next_user = (select(after.c.user_id).where(after.c.state == JobState.QUEUED, after.c.user_id > waiting.c.user_id)
                 .order_by(after.c.user_id).limit(1).scalar_subquery())
    waiting = waiting.union_all(select(next_user).where(waiting.c.user_id.is_not(None)))
    mine = jobs.alias("mine")
    top = (select(mine)
           .where(mine.c.state == JobState.QUEUED, mine.c.user_id == waiting.c.user_id)
           .order_by(mine.c.created_at, mine.c.id).limit(per_user)
           .lateral("top"))
    ranked = (
        select(top,
               func.row_number().over(partition_by=top.c.user_id, order_by=(top.c.created_at, top.c.id)).label("n"),
               func.min(top.c.created_at).over(partition_by=top.c.user_id).label("first"))
        .select_from(waiting.join(top, true()))
        .subquery()
    )
    job = aliased(Job, ranked)
    return _in_turn(select(job), job, ranked, per_user)


def depth(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)) or 0
