"""What the front ends show of jobs: the progress card, a history page, one job in full,
the administrator's job list. Each read returns plain records (:class:`JobRecord` and
the small dataclasses here), so the studio, the CLI and the REST API share one set of
queries and none of them holds a database session.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import select

from backend.accounts import ledger
from backend.db import Database
from backend.db.models import Job, JobOutput, LedgerEntry, User
from backend.jobs import store
from backend.jobs.store import JobRecord
from backend.jobs.state import JobState


class Output(NamedTuple):
    """One result of a job: the stored asset and its kind (image, audio, video, ...)."""

    asset_id: str
    kind: str


@dataclass(frozen=True)
class JobCard:
    """A job with what its finished card shows: its results and what was refunded."""

    job: JobRecord
    outputs: list[Output]
    refunded: int


@dataclass(frozen=True)
class HistoryRow:
    job: JobRecord
    outputs: list[Output]
    #: Credits given back (0: none).
    refund: int


@dataclass(frozen=True)
class HistoryPage:
    rows: list[HistoryRow]
    #: Where the next older page starts (pass as ``before``); None on the last page.
    next_cursor: dt.datetime | None


@dataclass(frozen=True)
class AdminJobRow:
    job: JobRecord
    user_name: str


def outputs_of(db: Database, job_id: str) -> list[Output]:
    """The job's results in the order they were stored."""
    with db.read() as s:
        rows = s.execute(select(JobOutput.asset_id, JobOutput.kind).where(JobOutput.job_id == job_id)
                         .order_by(JobOutput.id))
        return [Output(asset_id, kind) for asset_id, kind in rows]


def job_card(db: Database, job_id: str, *, user_id: int | None = None) -> JobCard:
    """The job with its results and refund; with ``user_id`` only that user's (else NotFound)."""
    job = store.get(db, job_id, user_id=user_id)
    return JobCard(job=job, outputs=outputs_of(db, job.id), refunded=ledger.refunded(db, job.id))


def job_detail(db: Database, job_id: str, *, user_id: int | None = None) -> JobCard:
    """One job in full for its page (the same as its card today)."""
    return job_card(db, job_id, user_id=user_id)


def history_page(db: Database, user_id: int, *, before: dt.datetime | None = None, size: int = 20) -> HistoryPage:
    """The user's ``size`` newest jobs created before ``before``, with results and refunds."""
    jobs = store.list_for_user(db, user_id, limit=size + 1, before=before)
    more = len(jobs) > size
    jobs = jobs[:size]
    if not jobs:
        return HistoryPage(rows=[], next_cursor=None)
    ids = [job.id for job in jobs]
    outputs: dict[str, list[Output]] = {}
    with db.read() as s:
        for job_id, asset_id, kind in s.execute(
            select(JobOutput.job_id, JobOutput.asset_id, JobOutput.kind).where(JobOutput.job_id.in_(ids))
            .order_by(JobOutput.id)
        ):
            outputs.setdefault(job_id, []).append(Output(asset_id, kind))
        refunds: dict[str | None, int] = dict(s.execute(
            select(LedgerEntry.job_id, LedgerEntry.amount).where(LedgerEntry.job_id.in_(ids), LedgerEntry.kind == "refund")
        ).all())
    rows = [HistoryRow(job=job, outputs=outputs.get(job.id, []), refund=int(refunds.get(job.id) or 0)) for job in jobs]
    return HistoryPage(rows=rows, next_cursor=jobs[-1].created_at if more else None)


def admin_jobs(db: Database, *, failed_only: bool = False, limit: int = 200) -> list[AdminJobRow]:
    """Everyone's newest jobs (only the failed ones with ``failed_only``) with their owners."""
    stmt = select(Job, User.name).join(User, User.id == Job.user_id).order_by(Job.created_at.desc()).limit(limit)
    if failed_only:
        stmt = stmt.where(Job.state == JobState.FAILED)
    with db.read() as s:
        return [AdminJobRow(job=JobRecord.of(job), user_name=name) for job, name in s.execute(stmt)]
