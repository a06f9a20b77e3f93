"""The central backlog: queued jobs in the order they should get a node.

Fairness: the user served least recently goes first, and within a user the
oldest job first. Reading only the first few queued jobs of each user keeps the query
small however long one user's queue is, and means a user with fifty queued jobs never
hides another user's one job behind them.
"""

from __future__ import annotations

import datetime as dt
from collections import deque

from sqlalchemy import Subquery, func, select, true
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
        firsts = _by_probing(per_user) if s.get_bind().dialect.name == "postgresql" else _by_window()
        job = aliased(Job, firsts)
        stmt = (
            select(job)
            .join(User, User.id == job.user_id)
            .where(firsts.c.n <= per_user)
            .order_by(firsts.c.n, func.coalesce(User.last_served_at, _NEVER), firsts.c.first, job.user_id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = list(s.scalars(stmt))
    by_user: dict[int, deque[Job]] = {}
    for row in rows:  # users appear in their turn's order with their first job
        by_user.setdefault(row.user_id, deque()).append(row)
    return list(by_user.values())


# Both give the queued jobs a user's line may hold, each with its place ``n`` in its
# user's line and the time ``first`` of that user's oldest queued job.

def _by_window() -> Subquery:
    """Number every queued job by its id alone, then read whole rows: the whole backlog is
    read (SQLite, where embedded backlogs are short and there is no LATERAL)."""
    ranked = (
        select(Job.id,
               func.row_number().over(partition_by=Job.user_id, order_by=(Job.created_at, Job.id)).label("n"),
               func.min(Job.created_at).over(partition_by=Job.user_id).label("first"))
        .where(Job.state == JobState.QUEUED)
        .subquery()
    )
    return select(Job.__table__, ranked.c.n, ranked.c.first).join(ranked, ranked.c.id == Job.id).subquery()


def _by_probing(per_user: int) -> Subquery:
    """Find the waiting users by skipping through ``ix_jobs_backlog`` (one probe per user,
    a recursive query: PostgreSQL has no skip scan), then each one's first ``per_user``
    jobs by another probe: the cost grows with the users waiting, not with their jobs."""
    queued = Job.__table__.c.state == JobState.QUEUED
    waiting = select(Job.__table__.c.user_id).where(queued).order_by("user_id").limit(1).cte("waiting", recursive=True)
    after = Job.__table__.alias("after")
    next_user = (select(after.c.user_id).where(after.c.state == JobState.QUEUED, after.c.user_id > waiting.c.user_id)
                 .order_by(after.c.user_id).limit(1).scalar_subquery())
    waiting = waiting.union_all(select(next_user).where(waiting.c.user_id.is_not(None)))
    mine = Job.__table__.alias("mine")
    top = (select(mine)
           .where(mine.c.state == JobState.QUEUED, mine.c.user_id == waiting.c.user_id)
           .order_by(mine.c.created_at, mine.c.id).limit(per_user)
           .lateral("top"))
    return (
        select(top,
               func.row_number().over(partition_by=top.c.user_id, order_by=(top.c.created_at, top.c.id)).label("n"),
               func.min(top.c.created_at).over(partition_by=top.c.user_id).label("first"))
        .select_from(waiting.join(top, true()))
        .subquery()
    )


def depth(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)) or 0
