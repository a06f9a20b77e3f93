"""The central backlog: queued jobs in the order they should get a node.

Fairness: the user served least recently goes first, and within a user the
oldest job first. Reading only the first few queued jobs of each user keeps the query
small however long one user's queue is, and means a user with fifty queued jobs never
hides another user's one job behind them.
"""

from __future__ import annotations

import datetime as dt
from collections import deque

from sqlalchemy import func, select

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
        ranked = (
            select(Job.id, Job.user_id,
                   func.row_number().over(partition_by=Job.user_id, order_by=(Job.created_at, Job.id)).label("n"),
                   func.min(Job.created_at).over(partition_by=Job.user_id).label("first"))
            .where(Job.state == JobState.QUEUED)
            .subquery()
        )
        stmt = (
            select(Job, User.last_served_at)
            .join(ranked, ranked.c.id == Job.id)
            .join(User, User.id == Job.user_id)
            .where(ranked.c.n <= per_user)
            .order_by(ranked.c.n, func.coalesce(User.last_served_at, _NEVER), ranked.c.first, Job.user_id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = list(s.execute(stmt))
    by_user: dict[int, deque[Job]] = {}
    for job, _ in rows:  # users appear in their turn's order with their first job
        by_user.setdefault(job.user_id, deque()).append(job)
    return list(by_user.values())


def depth(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)) or 0
