"""Submitting a job: validate → guard → price → charge → backlog.

:func:`submit` returns one of three outcomes rather than raising, because each is an
ordinary answer the studio shows: the job was **accepted**, it **needs confirmation**
(no capable node has a free slot: "about N s — queue anyway?"), or it was **rejected**
with a message in English and Chinese (invalid parameter, guard, credits, no node that
can run it). Nothing is charged unless the job is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backend import assets, jobs
from backend.jobs import limits, webhooks
from backend.errors import InvalidParameter, NotFound, StudioError
from backend.jobs.messages import prompt_id_of, user_event
from backend.jobs.placement import Needs
from backend.runtime import Backend
from backend.jobs.waiting import able_nodes, wait_if_busy
from backend.workflows import InputFacts, Quote, WorkflowSpec, quote, validate_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    job: jobs.JobRecord
    #: False when the idempotency key was seen before and this is the first job again.
    created: bool


@dataclass(frozen=True)
class NeedsConfirmation:
    wait_seconds: float
    message: dict[str, str]  # {en, zh}


@dataclass(frozen=True)
class Rejected:
    error: StudioError

    @property
    def message(self) -> dict[str, str]:
        return {"en": self.error.message, "zh": self.error.zh}


SubmitResult = Accepted | NeedsConfirmation | Rejected


@dataclass(frozen=True)
class Priced:
    """A job before it is made: its checked values, its inputs and its quote."""

    spec: WorkflowSpec
    values: dict[str, Any]
    inputs: dict[str, str]
    quote: Quote

    @property
    def needs(self) -> Needs:
        return Needs.of(self.spec, self.values, self.quote.memory_mb)


def price(backend: Backend, user_id: int, workflow: str, params: Mapping[str, Any], *, expert: bool = False) -> Priced:
    """Validate ``params`` and quote the job (raises InvalidParameter, NotFound); the
    guard's verdict is in the quote, not raised."""
    spec = backend.library.get(workflow)
    values = validate_params(spec, params, expert=expert)
    inputs, facts = _inputs(backend, spec, values, user_id)
    return Priced(spec=spec, values=values, inputs=inputs, quote=quote(spec, values, facts))


def submit(
    backend: Backend,
    user_id: int,
    workflow: str,
    params: Mapping[str, Any],
    *,
    idempotency_key: str,
    expert: bool = False,
    queue_if_busy: bool = False,
    webhook_url: str | None = None,
    on_queued: Callable[[], None] = lambda: None,
) -> SubmitResult:
    """Submit ``workflow`` with ``params`` for ``user_id``.

    File parameters (images, masks) take the id of an asset the user owns (uploaded
    before, or an output of one of their jobs). ``queue_if_busy`` is the confirmed
    resubmit after a :class:`NeedsConfirmation`. ``webhook_url`` is told when the job
    ends (:mod:`backend.jobs.webhooks`). Per-user limits (:mod:`backend.jobs.limits`) are checked
    before anything is charged. ``on_queued`` wakes the dispatcher.

    One writing transaction does the database's part: the limits (see
    :func:`~backend.jobs.limits.check_submit_in`), the job's insert with its idempotency
    key, the charge and the webhook. A key
    seen before makes the insert do nothing; the transaction then rolls back and the first
    job is the answer. Whatever refuses a request (a limit, a busy cluster, a changed
    parameter), a key seen before still answers with its job, as a retry expects.
    """
    fingerprint = jobs.request_hash(workflow, params, expert=expert, webhook_url=webhook_url)
    try:
        if webhook_url:
            webhooks.check_url(backend.settings, webhook_url)
        job_price = price(backend, user_id, workflow, params, expert=expert)
        spec, values, inputs, priced = job_price.spec, job_price.values, job_price.inputs, job_price.quote
        priced.check()
        new = jobs.NewJob(user_id=user_id, workflow=spec.name, params=values, inputs=inputs, cost=priced.cost,
                          idempotency_key=idempotency_key, request_hash=fingerprint, memory_mb=priced.memory_mb,
                          estimate_seconds=priced.seconds)
        with backend.db.write() as s:
            limits.check_submit_in(s, backend.settings, user_id, priced.cost)
            needs = Needs.of(spec, values, priced.memory_mb)
            if queue_if_busy:
                # Confirmed: only a missing capable node refuses it. The expected wait is
                # not worked out, as it reads the backlog and every busy slot's job.
                able_nodes(backend, needs)
            elif (wait := wait_if_busy(backend, needs)) is not None:
                raise _Busy(wait)  # asked, not submitted: the rollback un-counts the submit
            job = jobs.add(s, new)
            if job is None:
                raise _Replayed
            if webhook_url:
                webhooks.attach(s, job.id, webhook_url)
    except _Replayed:
        try:
            replay = jobs.find_by_key(backend.db, user_id, idempotency_key)
        except StudioError as exc:  # the database went away after the rollback
            return Rejected(error=exc)
        if replay is None:  # jobs are never deleted: the key's job is there once the insert met it
            return Rejected(error=NotFound("The job of this idempotency key cannot be found; send a new key.",
                                           zh="找不到该幂等键的任务，请使用新的键。"))
        return _replayed(replay, workflow, fingerprint)
    except _Busy as busy:
        return _replay(backend, user_id, idempotency_key, workflow, fingerprint) or _needs_confirmation(busy.wait)
    except StudioError as exc:
        return _replay(backend, user_id, idempotency_key, workflow, fingerprint) or Rejected(error=exc)
    log.info("job_id=%s node_id=- queued: %s for user %s, %d credits", job.id, spec.name, user_id, job.cost)
    try:
        backend.bus.publish_user_event(user_id, user_event("queued", job.id, cost=job.cost, workflow=spec.name))
    except StudioError as exc:
        log.warning("job_id=%s node_id=- queued event not sent: %s", job.id, exc)
    on_queued()
    return Accepted(job=job, created=True)


class _Busy(Exception):
    """Rolls back a submit that must first ask "queue anyway?"."""

    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


class _Replayed(Exception):
    """Rolls back a submit whose idempotency key already has a job."""


def _needs_confirmation(wait: float) -> NeedsConfirmation:
    seconds = round(wait)
    return NeedsConfirmation(
        wait_seconds=wait,
        message={
            "en": f"All nodes are busy, about {seconds} s wait. Queue anyway?",
            "zh": f"所有节点都在忙，预计等待约 {seconds} 秒。仍要排队吗？",
        },
    )


def _replay(backend: Backend, user_id: int, key: str, workflow: str, fingerprint: str) -> Accepted | Rejected | None:
    """The job a request with ``key`` made before, if any: a retry gets it whatever the
    retry itself would be refused for (a key used for another request is refused as
    such). Only refusals pay for this read."""
    try:
        job = jobs.find_by_key(backend.db, user_id, key)
    except StudioError:  # the database is away: the refusal itself is the answer
        return None
    return _replayed(job, workflow, fingerprint) if job is not None else None


def _replayed(job: jobs.JobRecord, workflow: str, fingerprint: str) -> Accepted | Rejected:
    """The answer to a request whose key made ``job``: that job, unless the key names
    another request."""
    try:
        return Accepted(job=jobs.same_request(job, workflow, fingerprint), created=False)
    except StudioError as exc:
        return Rejected(error=exc)


def _inputs(
    backend: Backend, spec: WorkflowSpec, values: dict[str, Any], user_id: int
) -> tuple[dict[str, str], dict[str, InputFacts]]:
    inputs: dict[str, str] = {}
    facts: dict[str, InputFacts] = {}
    for param in spec.file_params:
        asset_id = values.get(param.name)
        if not asset_id:
            continue
        if not assets.user_can_read(backend.db, user_id, str(asset_id)):
            raise InvalidParameter(
                f"{param.label.en}: no such uploaded file; upload it again.",
                zh=f"{param.label.zh}：找不到上传的文件，请重新上传。",
                param=param.name,
            )
        record = assets.get_asset(backend.db, str(asset_id))
        if param.type in ("image", "mask") and record.kind != "image":
            raise InvalidParameter(f"{param.label.en} must be an image.", zh=f"{param.label.zh}必须是图片。", param=param.name)
        inputs[param.name] = record.id
        facts[param.name] = InputFacts(width=record.width or 0, height=record.height or 0, seconds=record.seconds or 0.0)
    return inputs, facts


def cancel(backend: Backend, job_id: str, *, user_id: int | None, on_freed: Callable[[], None] = lambda: None) -> bool:
    """Cancel a job (its owner, or an admin with ``user_id=None``) and refund it.

    A queued job simply leaves the backlog. A job on a node loses its reservation; the
    node's agent sees that and deletes the prompt from ComfyUI's queue or interrupts it.
    """
    job = jobs.get(backend.db, job_id, user_id=user_id)
    moved = jobs.cancel(backend.db, job_id, by_user=user_id)
    if job.node_id:
        backend.registry.release(job.node_id, prompt_id_of(job.id, job.attempts))
        on_freed()
    if moved:
        try:
            backend.bus.publish_user_event(job.user_id, user_event("cancelled", job.id, refunded=job.cost))
        except StudioError as exc:
            log.warning("job_id=%s node_id=%s cancelled event not sent: %s", job.id, job.node_id, exc)
    return moved


__all__ = ["Accepted", "NeedsConfirmation", "Priced", "Rejected", "SubmitResult", "cancel", "price", "submit"]
