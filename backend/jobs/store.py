"""The job lifecycle in the database: creation with its charge, and transitions.

Every change of state is one conditional UPDATE from the states it may come from, so a
duplicate (a redelivered event, two sweepers, an agent racing an admin) changes nothing
the second time. Failing or cancelling a job refunds it in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import uuid
from collections.abc import Mapping
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import case, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.accounts import ledger
from backend.db import Database
from backend.db.models import Job, utcnow
from backend.errors import InvalidParameter, JobStateError, NotFound
from backend.jobs.state import ENTERED_FROM, REFUNDED, TERMINAL, JobState

#: The timestamp column stamped when a state is entered.
_STAMP = {JobState.DISPATCHED: "dispatched_at", JobState.SUBMITTED: "submitted_at", JobState.RUNNING: "started_at"}

MAX_IDEMPOTENCY_KEY = 64


@dataclass(frozen=True)
class JobRecord:
    """A job as the front ends see it: a plain copy of its row, detached from any session."""

    id: str
    user_id: int
    workflow: str
    params: dict[str, Any]
    inputs: dict[str, str]
    idempotency_key: str
    request_hash: str | None
    state: JobState
    cost: int
    memory_mb: float
    estimate_seconds: float
    node_id: str | None
    prompt_id: str | None
    attempts: int
    progress: float
    created_at: dt.datetime
    updated_at: dt.datetime
    dispatched_at: dt.datetime | None
    submitted_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error_type: str | None
    error_message: str | None
    error_stage: str | None

    @classmethod
    def of(cls, job: Job) -> JobRecord:
        values = {f.name: getattr(job, f.name) for f in fields(cls)}
        return cls(**{**values, "state": JobState(job.state)})


@dataclass(frozen=True)
class NewJob:
    """What submit decided for a job before it is stored and charged."""

    user_id: int
    workflow: str
    params: dict[str, Any]
    inputs: dict[str, str]
    cost: int
    idempotency_key: str
    memory_mb: float = 0.0
    estimate_seconds: float = 0.0
    #: :func:`request_hash` of the submit that asked for the job.
    request_hash: str | None = None


def request_hash(workflow: str, params: Mapping[str, Any], *, expert: bool = False, webhook_url: str | None = None) -> str:
    """The fingerprint of a submit as it was asked: the parameters as sent, before
    validation picks a random seed, so that a retry of the same request has the same one."""
    asked = {"workflow": workflow, "params": dict(params), "expert": expert, "webhook_url": webhook_url or None}
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create(db: Database, new: NewJob) -> tuple[JobRecord, bool]:
    """Store and charge a job in one transaction; ``(job, created)``.

    A replayed idempotency key returns the first job with ``created=False`` and charges
    nothing. Raises InsufficientCredits (nothing stored) when the balance is too low.
    """
    try:
        with db.write() as s:
            record = add(s, new)
            if record is None:
                raise _Replayed
        return record, True
    except _Replayed:
        pass
    existing = find_by_key(db, new.user_id, new.idempotency_key)
    if existing is None:  # jobs are never deleted, so the key's job is there once the insert met it
        raise NotFound("The job of this idempotency key cannot be found; send a new key.", zh="找不到该幂等键的任务，请使用新的键。")
    return same_request(existing, new.workflow, new.request_hash), False


def add(s: Session, new: NewJob) -> JobRecord | None:
    """Store and charge a job in the caller's writing transaction; None (nothing stored,
    nothing charged) when the user already has a job with this idempotency key.

    The key check is the insert itself (``INSERT … ON CONFLICT DO NOTHING`` on the unique
    ``(user_id, idempotency_key)``), so a replay and a first request racing each other
    cost one statement and make one job: a second insert of the same key waits for the
    first's transaction and then inserts nothing. Raises PermissionDenied for a disabled
    account and InsufficientCredits when the balance is too low (both from the charge; the
    caller's transaction must then roll back).
    """
    key = new.idempotency_key
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidParameter(f"An idempotency key has 1–{MAX_IDEMPOTENCY_KEY} characters.", param="idempotency_key")
    now = utcnow()
    values = dict(
        id=uuid.uuid4().hex, user_id=new.user_id, workflow=new.workflow, params=dict(new.params), inputs=dict(new.inputs),
        idempotency_key=key, request_hash=new.request_hash, state=JobState.QUEUED.value, cost=new.cost, memory_mb=new.memory_mb,
        estimate_seconds=new.estimate_seconds, created_at=now, updated_at=now,
    )
    row = s.execute(_insert_job(s.get_bind().dialect.name), values).mappings().first()
    if row is None:
        return None
    ledger.charge(s, new.user_id, row["id"], new.cost)
    return JobRecord(**{f.name: row[f.name] for f in fields(JobRecord) if f.name != "state"}, state=JobState(row["state"]))


@functools.lru_cache(maxsize=4)
def _insert_job(dialect_name: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING`` for one job, its values bound at
    execution: built once, not per submit (building it took a fifth of a submit's Python)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (dialect.insert(Job.__table__)
            .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
            .returning(*Job.__table__.c))


class _Replayed(Exception):
    """Rolls back a transaction whose insert found the idempotency key taken."""


def find_by_key(db: Database, user_id: int, key: str) -> JobRecord | None:
    """The user's job created with idempotency key ``key``, if any."""
    with db.read() as s:
        job = s.scalar(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key))
        return JobRecord.of(job) if job is not None else None


def same_request(job: JobRecord, workflow: str, fingerprint: str | None) -> JobRecord:
    """``job``, made earlier with the idempotency key of a request for ``workflow`` with
    ``fingerprint`` (:func:`request_hash`), if that request is the same one; otherwise
    InvalidParameter (``idempotency_key``): a key names one request, never two."""
    known = job.request_hash is not None and fingerprint is not None
    if job.workflow != workflow or (known and job.request_hash != fingerprint):
        raise InvalidParameter(
            "This idempotency key was already used for another request (other workflow or parameters); "
            "send a new key for a new request.",
            zh="该幂等键已用于另一个请求（工作流或参数不同）；新的请求请使用新的键。",
            param="idempotency_key",
        )
    return job


def transition(
    s: Session,
    job_id: str,
    to: JobState,
    *,
    expect: Collection[JobState] | None = None,
    expect_attempts: int | None = None,
    **fields: Any,
) -> bool:
    """Move ``job_id`` to ``to`` if it is in one of the allowed states; True if it moved.

    ``expect`` narrows the allowed source states; ``expect_attempts`` also requires the
    attempt counter to be unchanged since the caller read the job (so a dispatcher acting
    on a stale copy cannot reuse an attempt number); ``fields`` are set on the row as
    well. Entering ``failed`` or ``cancelled`` refunds the charge in the same transaction.
    """
    where = [] if expect_attempts is None else [Job.attempts == expect_attempts]
    return _move(s, job_id, JobState(to), expect, where, fields) is not None


def advance(
    s: Session, job_id: str, to: JobState, *, attempt: int | None, node_id: str | None,
    expect: Collection[JobState] | None = None, **fields: Any,
) -> int | None:
    """An agent's event about one attempt of a job on its node: move the job to ``to`` as
    :func:`transition` does, if it is still that attempt on that node; the owner's user id
    if it moved, None if not (an unknown job, an older attempt, another node, or a state
    it has already left). One conditional ``UPDATE … RETURNING``: no read first."""
    return _move(s, job_id, JobState(to), expect, [Job.attempts == attempt, Job.node_id == node_id], fields)


def _move(
    s: Session, job_id: str, to: JobState, expect: Collection[JobState] | None, conditions: list[Any],
    fields: dict[str, Any],
) -> int | None:
    """The conditional UPDATE behind both: the owner's user id if the row moved."""
    allowed = ENTERED_FROM[to] if expect is None else tuple(set(map(JobState, expect)) & set(ENTERED_FROM[to]))
    now = utcnow()
    values: dict[str, Any] = {"state": to.value, "updated_at": now, **fields}
    if to in _STAMP:
        values.setdefault(_STAMP[to], now)
    if to in TERMINAL:
        values.setdefault("finished_at", now)
    where = [Job.id == job_id, Job.state.in_([state.value for state in allowed]), *conditions]
    owner = s.scalar(update(Job).where(*where).values(**values).returning(Job.user_id))
    moved = owner is not None
    if moved and to in REFUNDED:
        ledger.refund(s, job_id, note=to.value)
    return owner


def dispatch(s: Session, placements: Collection[tuple[str, int, str]]) -> dict[str, dt.datetime]:
    """Move queued jobs to ``dispatched`` in one statement: ``placements`` are ``(job_id,
    attempts read, node_id)``; each job moves only if it is still queued with that attempt
    counter (as :func:`transition` with ``expect_attempts``), taking the next attempt and
    the node. The jobs that moved, each with the time it was stamped with (its
    ``dispatched_at`` and ``updated_at``; :func:`undispatch` needs it)."""
    if not placements:
        return {}
    nodes = {job_id: node for job_id, _, node in placements}
    now = utcnow()
    stmt = (update(Job)
            .where(Job.id.in_(list(nodes)), Job.state == JobState.QUEUED.value,
                   tuple_(Job.id, Job.attempts).in_([(job_id, attempts) for job_id, attempts, _ in placements]))
            .values(state=JobState.DISPATCHED.value, node_id=case(nodes, value=Job.id), attempts=Job.attempts + 1,
                    updated_at=now, dispatched_at=now)
            .returning(Job.id)
            .execution_options(synchronize_session=False))
    return dict.fromkeys(s.scalars(stmt), now)


def undispatch(s: Session, job_id: str, attempt: int, stamped: dt.datetime) -> bool:
    """Put a job whose publish failed back in the backlog, if it is still that dispatch,
    untouched: attempt ``attempt``, last updated when :func:`dispatch` ``stamped`` it. An
    unconfirmed publish may have reached the broker after all, and the sweeper republishes
    such a dispatch as it finds it (:func:`claim_republish` updates it): requeueing it then
    would run the job twice."""
    return _move(s, job_id, JobState.QUEUED, (JobState.DISPATCHED,),
                 [Job.attempts == attempt, Job.updated_at == stamped], {}) is not None


def claim_republish(s: Session, job_id: str, attempt: int, node_id: str) -> bool:
    """The sweeper's claim on a dispatch it will send again: True if the job is still
    dispatched as ``attempt`` to ``node_id``. Its ``updated_at`` becomes now — the clock of
    the next republish, and what tells :func:`undispatch` that it was sent again — while
    ``dispatched_at`` keeps when the attempt was made (the node may have run it already)."""
    claimed = s.scalar(update(Job)
                       .where(Job.id == job_id, Job.state == JobState.DISPATCHED.value, Job.attempts == attempt,
                              Job.node_id == node_id)
                       .values(updated_at=utcnow()).returning(Job.id))
    return claimed is not None


def fail(
    db: Database, job_id: str, *, error_type: str, message: str, stage: str | None = None,
    expect: Collection[JobState] | None = None, of_attempt: tuple[int, str | None] | None = None,
) -> bool:
    """Fail an unfinished job and refund it; False if it had already ended. ``of_attempt``
    ``(attempt, node_id)``: only if it is still that attempt on that node (as :func:`advance`)."""
    error: dict[str, Any] = {"error_type": error_type[:128], "error_message": message, "error_stage": stage}
    with db.write() as s:
        if of_attempt is None:
            return transition(s, job_id, JobState.FAILED, expect=expect, **error)
        attempt, node_id = of_attempt
        return advance(s, job_id, JobState.FAILED, attempt=attempt, node_id=node_id, expect=expect, **error) is not None


def succeed(db: Database, job_id: str) -> bool:
    with db.write() as s:
        return transition(s, job_id, JobState.SUCCEEDED, progress=1.0)


def cancel(db: Database, job_id: str, *, by_user: int | None = None) -> bool:
    """Cancel an unfinished job and refund it. ``by_user`` must own it (None: an admin)."""
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None or (by_user is not None and job.user_id != by_user):
            raise NotFound(f"No job {job_id}.", zh=f"没有任务 {job_id}。")
        if job.state in TERMINAL:
            raise JobStateError(f"The job has already {job.state}.", zh="任务已经结束。")
        return transition(s, job_id, JobState.CANCELLED, error_type="Cancelled", error_message="cancelled")


def get(db: Database, job_id: str, *, user_id: int | None = None) -> JobRecord:
    """The job; with ``user_id``, only if that user owns it (else NotFound, never 'forbidden')."""
    with db.read() as s:
        row = s.get(Job, job_id)
        job = JobRecord.of(row) if row is not None else None
    if job is None or (user_id is not None and job.user_id != user_id):
        raise NotFound(f"No job {job_id}.", zh=f"没有任务 {job_id}。")
    return job


def list_for_user(db: Database, user_id: int, *, limit: int = 50, before: dt.datetime | None = None) -> list[JobRecord]:
    """The user's jobs created before ``before`` (all if None), newest first."""
    with db.read() as s:
        stmt = select(Job).where(Job.user_id == user_id)
        if before is not None:
            stmt = stmt.where(Job.created_at < before)
        return [JobRecord.of(job) for job in s.scalars(stmt.order_by(Job.created_at.desc()).limit(limit))]


def most_used_workflows(db: Database, user_id: int, *, limit: int = 5) -> list[str]:
    """The workflows a user ran most often, most used first."""
    with db.read() as s:
        count = func.count(Job.id)
        stmt = (select(Job.workflow).where(Job.user_id == user_id).group_by(Job.workflow)
                .order_by(count.desc(), Job.workflow).limit(limit))
        return list(s.scalars(stmt))
