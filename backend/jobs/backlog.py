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


def lines(db: Database, *, per_user: int = PER_USER) -> list[deque[Job]]:
    """One line of queued jobs per user (oldest first), users least recently served first."""
    with db.read() as s:
        ranked = (
            select(Job.id, func.row_number().over(partition_by=Job.user_id, order_by=(Job.created_at, Job.id)).label("n"))
            .where(Job.state == JobState.QUEUED)
            .subquery()
        )
        stmt = (
            select(Job, User.last_served_at)
            .join(ranked, ranked.c.id == Job.id)
            .join(User, User.id == Job.user_id)
            .where(ranked.c.n <= per_user)
            .order_by(Job.created_at, Job.id)
        )
        rows = list(s.execute(stmt))
    by_user: dict[int, deque[Job]] = {}
    served: dict[int, dt.datetime] = {}
    for job, last_served in rows:
        by_user.setdefault(job.user_id, deque()).append(job)
        served[job.user_id] = last_served or _NEVER
    order = sorted(by_user, key=lambda user: (served[user], by_user[user][0].created_at))
    return [by_user[user] for user in order]


def depth(db: Database) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED)) or 0
