"""A job as one plain record: what the API answers, what a webhook posts.

Built from the database (the truth), never from events: state, price, refund, the
outputs' asset ids and, for a failure, the reason in both languages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from . import jobs, ledger
from .db import Database
from .db.models import Job, JobOutput
from .messages import failure_reason


@dataclass(frozen=True)
class JobRecord:
    id: str
    workflow: str
    state: str
    params: dict[str, Any]
    cost: int
    refunded: int
    progress: float
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    outputs: list[dict[str, str]] = field(default_factory=list)
    #: {en, zh} for failed and cancelled jobs.
    reason: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "started_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


def job_record(db: Database, job_id: str, *, user_id: int | None = None) -> JobRecord:
    """The job's record; with ``user_id``, NotFound unless that user owns it."""
    job = jobs.get(db, job_id, user_id=user_id)
    return from_job(db, job)


def from_job(db: Database, job: Job) -> JobRecord:
    with db.read() as s:
        rows = s.execute(select(JobOutput.asset_id, JobOutput.kind).where(JobOutput.job_id == job.id)
                         .order_by(JobOutput.id)).all()
    reason = None
    if job.state == "failed":
        reason = failure_reason(job.error_stage, job.error_type or "Error", job.error_message or "")
    elif job.state == "cancelled":
        reason = {"en": "The job was cancelled. Your credits were refunded.", "zh": "任务已取消，积分已退还。"}
    refunded = ledger.refunded(db, job.id) if job.state in jobs.TERMINAL_STATES else 0
    return JobRecord(id=job.id, workflow=job.workflow, state=job.state, params=dict(job.params), cost=job.cost,
                     refunded=refunded, progress=float(job.progress or 0.0), created_at=job.created_at,
                     started_at=job.started_at, finished_at=job.finished_at,
                     outputs=[{"asset_id": a, "kind": k} for a, k in rows], reason=reason)
