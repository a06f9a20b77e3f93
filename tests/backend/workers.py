"""Functions run in child processes by the concurrency tests (importable by 'spawn')."""

from __future__ import annotations

import uuid

from backend import jobs
from backend.db import Database
from backend.errors import InsufficientCredits


def submit_jobs(url: str, user_id: int, cost: int, attempts: int, start) -> int:  # type: ignore[no-untyped-def]
    """Try ``attempts`` charged jobs once ``start`` is set; returns how many were accepted."""
    db = Database(url)
    start.wait(30)
    accepted = 0
    for _ in range(attempts):
        new = jobs.NewJob(user_id=user_id, workflow="w", params={}, inputs={}, cost=cost, idempotency_key=uuid.uuid4().hex)
        try:
            jobs.create(db, new)
            accepted += 1
        except InsufficientCredits:
            pass
    db.dispose()
    return accepted
