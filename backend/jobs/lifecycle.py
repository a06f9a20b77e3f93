"""The lifecycle consumer: applies agent events to the database and tells the user.

Each event becomes a conditional state change, so a redelivered or late
event changes nothing. Events from an older attempt of a job (it was moved to another
node meanwhile) are recorded in the log and otherwise ignored. A job that ends frees its
slot as soon as the consumer takes its event, before the database work, and wakes the
dispatcher, so the node gets its next job without waiting for a poll or for the write.

What a failure to apply an event means decides what happens to it
(``backend.errors``):

- the database (or another service) is **unavailable**: the event is fine. It is tried
  again, in place and without limit, until the service is back: holding the delivery
  keeps a job's events in order and spends nothing of the queue's delivery count, and
  the retry waits at most :data:`MAX_RETRY_SECONDS`, so events flow again within
  seconds of the database's return. Nothing else waits for this consumer: the
  dispatcher and the sweeper run on their own threads.
- the event fails **for its own reasons** (a deliberate error: it names a file the asset
  store does not have, a size that does not match), or keeps crashing the handler
  :data:`MAX_EVENT_ATTEMPTS` times: it is set aside in the bus's dead-letter queue with
  the reason, where an operator sees it (admin page, ``python -m backend events
  dead-letters``) and can replay it once the cause is fixed. Never silently dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import case, literal, select
from sqlalchemy.orm import Session

from backend import assets, jobs
from backend.db.models import Job, JobOutput, utcnow
from backend.errors import StudioError, Unavailable
from backend.accounts.ledger import refunded
from backend.jobs.messages import failure_reason, prompt_id_of, user_event
from backend.jobs.sizing import QueueSizing
from backend.ports.bus import Delivery, Subscription
from backend.runtime import Backend
from backend.jobs.state import JobState

log = logging.getLogger(__name__)

#: Tries of an event whose handling keeps crashing (a bug, not an outage) before it is
#: set aside in the dead-letter queue.
MAX_EVENT_ATTEMPTS = 5
#: Longest wait between two tries of an event while a service is unavailable.
MAX_RETRY_SECONDS = 2.0
FIRST_RETRY_SECONDS = 0.1
#: Longest failure message kept for the creator; ComfyUI's can be long.
MAX_MESSAGE = 500
#: Events after which the node no longer runs the attempt: its slot is freed at once. (A
#: ``requeue`` frees it only once the job did go back to the backlog: a late one for a job
#: the database has seen start must not free the slot the job still runs in.)
ENDS = frozenset({"succeeded", "failed"})


#: Events the bus may hand over before the applier is done with the ones before them. Each
#: is looked at as it arrives (an end frees its node's slot then), and applied in order.
PREFETCH = 64
#: Most events applied in one transaction when they queue up (every kind may be: an
#: ``output``'s file is checked in the asset store before the transaction opens).
BATCH = 32
#: Applier threads on PostgreSQL. Order matters only within a job, so the events are
#: split by job id, each job's always to the same applier. Two, as measured (``python -m
#: bench lifecycle``): on a loaded machine an applier waits for its round trips, and two
#: drained 1.4× as fast as one; on a quiet one applying is CPU-bound and more appliers
#: only cut the runs that go in one transaction (four: 0.85× of one). SQLite takes one
#: writer at a time: more appliers would only queue for its lock.
APPLIERS = 2


class LifecycleConsumer:
    """Consumes the lifecycle queue; ``on_slot_freed`` is called when a job leaves a node.

    The bus's thread hands over each event as it arrives, and a job's end frees its node's
    slot right there; ``appliers`` threads (default :data:`APPLIERS`, one on SQLite) apply
    the events to the database, each the events of its share of the jobs in their order (a
    run that queued up in one transaction), and settle each. After a reconnect or a
    restart, events come again: each change is conditional, so applying one twice changes
    nothing."""

    def __init__(self, backend: Backend, *, on_slot_freed: Callable[[], None] = lambda: None,
                 prefetch: int = PREFETCH, sizing: QueueSizing | None = None, appliers: int | None = None) -> None:
        self.backend = backend
        self.on_slot_freed = on_slot_freed
        #: Told when a job reached ComfyUI (the dispatcher's sizing measures its lag).
        self.sizing = sizing
        self.prefetch = prefetch
        self.appliers = appliers if appliers is not None else 1 if backend.db.is_sqlite else APPLIERS
        if self.appliers < 1:
            raise ValueError(f"appliers must be at least 1, not {self.appliers}")
        self._subscription: Subscription | None = None
        self._stop = threading.Event()
        #: One inbox per applier thread; a job's events always go to the same one.
        self._inboxes: list[queue.SimpleQueue[Delivery]] = []
        self._threads: list[threading.Thread] = []
        #: (node, prompt id) -> when: the ends whose slot was freed on arrival, not yet applied.
        self._freed: dict[tuple[str, str], dt.datetime] = {}
        self._freed_lock = threading.Lock()

    def start(self) -> None:
        self._stop.clear()
        with self._freed_lock:
            self._freed.clear()
        self._inboxes = [queue.SimpleQueue() for _ in range(self.appliers)]
        self._threads = [threading.Thread(target=self._apply_inbox, args=(inbox,), name=f"lifecycle-applier-{n}", daemon=True)
                         for n, inbox in enumerate(self._inboxes)]
        for thread in self._threads:
            thread.start()
        self._subscription = self.backend.bus.consume_lifecycle(self._receive, prefetch=self.prefetch)

    def stop(self) -> None:
        self._stop.set()  # ends a retry in progress; its delivery goes back to the queue
        if self._subscription is not None:
            self._subscription.close()  # unsettled deliveries, applied or not, go back in order
            self._subscription = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _receive(self, delivery: Delivery) -> None:
        """On the bus's thread, as the event arrives: free the node's slot if the event
        says the job ended, and queue the event for the applier. Never raises."""
        body = delivery.body
        try:
            self._measure(body)
            if body.get("type") in ENDS:
                freed_at = utcnow()
                if self._free(body):
                    with self._freed_lock:
                        self._freed[(str(body.get("node_id")), prompt_id_of(body["job_id"], body["attempt"]))] = freed_at
        except Exception:  # noqa: BLE001 - a malformed event: the applier sets it aside
            log.exception("job_id=%s node_id=%s could not free the slot on arrival", body.get("job_id"), body.get("node_id"))
        self._inboxes[self._applier_of(body)].put(delivery)

    def _applier_of(self, body: dict[str, Any]) -> int:
        """The applier of the event's job, the same for every event of the job (an event
        without a job id has one too: the applier sets it aside)."""
        return zlib.crc32(str(body.get("job_id")).encode()) % len(self._inboxes)

    def _measure(self, body: dict[str, Any]) -> None:
        if self.sizing is None:
            return
        if body.get("type") == "submitted":
            self.sizing.submitted(prompt_id_of(body["job_id"], body["attempt"]))

    def _apply_inbox(self, inbox: "queue.SimpleQueue[Delivery]") -> None:
        """Apply the events in order; a run that queued up goes in one transaction (one
        commit instead of one each)."""
        while not self._stop.is_set():
            try:
                batch = [inbox.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < BATCH:
                try:
                    batch.append(inbox.get_nowait())
                except queue.Empty:
                    break
            if len(batch) > 1:
                self._deliver_together(batch)
            else:
                self._deliver(batch[0])

    def _deliver_together(self, deliveries: list[Delivery]) -> None:
        try:
            self.apply_together([d.body for d in deliveries])
        except Exception:  # noqa: BLE001 - nothing was written: one by one, each with its retries and dead letters
            log.info("applying %d events together failed; applying them one by one", len(deliveries), exc_info=True)
            for delivery in deliveries:
                self._deliver(delivery)
            return
        for delivery in deliveries:
            delivery.ack()

    def _deliver(self, delivery: Delivery) -> None:
        """Apply one event and settle it (ack, or set it aside); while a service is away,
        try again in place, however long it takes."""
        body = delivery.body
        crashes = 0
        delay = FIRST_RETRY_SECONDS
        waiting_since: float | None = None
        while not self._stop.is_set():  # stopping: the unsettled delivery goes back to the queue
            try:
                settled = self._settle(delivery, crashes)
            except Unavailable as exc:  # the event is fine, the world is not
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.warning("job_id=%s node_id=%s event %s waits for %s", body.get("job_id"), body.get("node_id"), body.get("type"), exc)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)
                continue
            if settled:
                if waiting_since is not None:
                    log.info("job_id=%s node_id=%s event %s applied after %.1f s of waiting", body.get("job_id"), body.get("node_id"),
                             body.get("type"),
                             time.monotonic() - waiting_since)
                return
            crashes += 1
            self._stop.wait(min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2**crashes))

    def _settle(self, delivery: Delivery, crashes: int) -> bool:
        """One try: apply and ack, or set aside an event that fails for its own reasons;
        False after a crash that earns another try. ``Unavailable`` propagates."""
        body = delivery.body
        job_id, node_id, kind = body.get("job_id"), body.get("node_id"), body.get("type")
        try:
            self.apply(body)
        except Unavailable:
            raise
        except StudioError as exc:
            log.error("job_id=%s node_id=%s event %s cannot be applied: %s; set aside as a dead letter", job_id, node_id, kind,
                      exc)
            delivery.dead_letter(f"{type(exc).__name__}: {exc}")
            return True
        except Exception as exc:  # noqa: BLE001 - a bug: retried a few times, then set aside
            if crashes + 1 < MAX_EVENT_ATTEMPTS:
                log.exception("job_id=%s node_id=%s applying event %s crashed (%d); retrying", job_id, node_id, kind,
                              crashes + 1)
                return False
            log.exception("job_id=%s node_id=%s event %s crashed %d times; set aside as a dead letter", job_id, node_id, kind,
                          crashes + 1)
            delivery.dead_letter(f"{type(exc).__name__}: {exc} (crashed {crashes + 1} times)")
            return True
        delivery.ack()
        return True

    def apply(self, event: dict[str, Any]) -> None:
        """Apply one agent event (see :func:`backend.jobs.messages.lifecycle`).

        Each state change is one conditional write that names the event's attempt and
        node, so an event of an older attempt (the job moved on meanwhile), another node's,
        a duplicate or one for an unknown job changes nothing, without a read first."""
        self.apply_together([event])

    def apply_together(self, events: list[dict[str, Any]]) -> None:
        """Apply events in order in one transaction, then tell their users; all or
        nothing. An ``output`` whose file the asset store does not have (or not at the
        size reported) raises before anything is written."""
        writes = []
        for event in events:
            write = getattr(self, f"_write_{event['type']}", None)
            if write is None:
                log.warning("job_id=%s node_id=%s unknown event type %r", event["job_id"], event.get("node_id"), event["type"])
                continue
            if event["type"] == "output":
                assets.check_output_blob(self.backend.blobs, _output_asset(event), int(event["size"]))
            freed_at = None
            if event["type"] in ENDS:
                freed_at = self._freed_on_arrival(event)
                if freed_at is None:
                    freed_at = utcnow()
                    self._free(event)
            writes.append((write, event, freed_at))
        with self.backend.db.write() as s:
            then = [write(s, event, freed_at) for write, event, freed_at in writes]
        for action in then:
            action()

    def _freed_on_arrival(self, event: dict[str, Any]) -> dt.datetime | None:
        """When the event's slot was freed on arrival (None: it was not)."""
        key = (str(event.get("node_id")), prompt_id_of(event["job_id"], event.get("attempt")))  # type: ignore[arg-type]
        with self._freed_lock:
            return self._freed.pop(key, None)

    def _tell(self, user_id: int, event: dict[str, Any], event_type: str, /, **fields: Any) -> None:
        try:
            self.backend.bus.publish_user_event(user_id, user_event(event_type, event["job_id"], **fields))
        except StudioError as exc:  # user events are best effort; the database has the truth
            log.warning("job_id=%s node_id=%s user event %s not sent: %s", event["job_id"], event.get("node_id"), event_type,
                        exc)

    def _free(self, event: dict[str, Any]) -> bool:
        """The node says the attempt is over: free its slot and wake the dispatcher now,
        before the database work of the event, which may wait behind other events.

        Safe before the database knows because the slot is the attempt's (its prompt id):
        an event of an older attempt or of another node frees nobody else's slot, and the
        job's row still says where it is. ``Registry.end`` keeps the sweeper from
        restoring the slot of a job the database still shows on the node; if this process
        dies before the write, the redelivered event (or the sweeper's adoption or node
        checks) settles the job once, with at most one refund (a conditional transition)."""
        job_id, node_id, attempt = event["job_id"], event.get("node_id"), event.get("attempt")
        freed = False
        if node_id and attempt is not None:
            try:
                self.backend.registry.end(node_id, prompt_id_of(job_id, attempt))
                freed = True
            except StudioError as exc:
                # The registry is away (Redis restarting). The event must still be applied:
                # raising here would leave the job running in the database forever. The
                # sweeper releases the leftover slot once the database shows the job ended.
                log.warning("job_id=%s node_id=%s slot not released now (%s); the sweeper will", job_id, node_id, exc)
        self.on_slot_freed()
        return freed

    @staticmethod
    def _advance_in(s: Session, event: dict[str, Any], to: JobState, **fields: Any) -> int | None:
        owner = jobs.advance(s, event["job_id"], to, attempt=event.get("attempt"), node_id=event.get("node_id"), **fields)
        if owner is None:
            log.info("job_id=%s node_id=%s %s event of attempt %s changed nothing (a duplicate, an older attempt or "
                     "an unknown job)", event["job_id"], event.get("node_id"), event["type"], event.get("attempt"))
        return owner

    # Each _write_<kind> makes the event's change in the caller's transaction and returns
    # what to do once it committed (tell the user, free a slot). An end is stamped
    # ``finished_at`` with the moment its slot was freed (``freed_at``), not with the
    # commit's: the node's next job may be dispatched in between, and the database's
    # record of what a node held at once must not show the two overlapping. When the
    # node's own time is earlier still, that counts (``_on_node``).

    def _write_submitted(self, s: Session, event: dict[str, Any], freed_at: dt.datetime | None) -> AfterCommit:
        self._advance_in(s, event, JobState.SUBMITTED, prompt_id=event.get("prompt_id"))
        return _nothing

    def _write_started(self, s: Session, event: dict[str, Any], freed_at: dt.datetime | None) -> AfterCommit:
        owner = self._advance_in(s, event, JobState.RUNNING, started_at=_on_node(event, "started_at", utcnow()))
        if owner is None:
            return _nothing
        return lambda: self._tell(owner, event, "started", node=event.get("node_id"))

    def _write_output(self, s: Session, event: dict[str, Any], freed_at: dt.datetime | None) -> AfterCommit:
        job_id, node_id = event["job_id"], event.get("node_id")
        job = s.execute(select(Job.user_id, Job.workflow).where(
            Job.id == job_id, Job.attempts == event.get("attempt"), Job.node_id == node_id)).one_or_none()
        if job is None:
            log.info("job_id=%s node_id=%s output of attempt %s ignored (an older attempt or an unknown job)", job_id,
                     node_id, event.get("attempt"))
            return _nothing
        graph_node, asset_id, kind = str(event["graph_node"]), _output_asset(event), event.get("kind", "image")
        assets.record_output_in(
            s,
            job_id=job_id,
            user_id=job.user_id,
            workflow=job.workflow,
            graph_node_id=graph_node,
            position=int(event.get("position", 0)),
            asset_id=asset_id,
            size=int(event["size"]),
            kind=kind,
            format=event.get("format", "PNG"),
            width=event.get("width"),
            height=event.get("height"),
            seconds=event.get("seconds"),
        )
        return lambda: self._tell(job.user_id, event, "output", asset_id=asset_id, kind=kind, graph_node=graph_node)

    def _write_succeeded(self, s: Session, event: dict[str, Any], freed_at: dt.datetime | None) -> AfterCommit:
        job_id = event["job_id"]
        owner = self._advance_in(s, event, JobState.SUCCEEDED, progress=1.0, finished_at=_ended(event, freed_at))
        if owner is None:
            return _nothing
        outputs = list(s.scalars(select(JobOutput.asset_id).where(JobOutput.job_id == job_id).order_by(JobOutput.id)))

        def after() -> None:
            log.info("job_id=%s node_id=%s succeeded with %d output(s)", job_id, event.get("node_id"), len(outputs))
            self._tell(owner, event, "succeeded", outputs=outputs)

        return after

    def _write_failed(self, s: Session, event: dict[str, Any], freed_at: dt.datetime | None) -> AfterCommit:
        stage = event.get("stage")
        error_type = str(event.get("error_type") or "Error")
        message = str(event.get("message") or "")[:MAX_MESSAGE]
        # Refunded in the same transaction as the state change (jobs.advance).
        owner = self._advance_in(s, event, JobState.FAILED, error_type=error_type[:128], error_message=message,
                                 error_stage=stage, finished_at=_ended(event, freed_at))
        if owner is None:
            return _nothing

        def after() -> None:
            log.info("job_id=%s node_id=%s failed at %s: %s", event["job_id"], event.get("node_id"), stage, error_type)
            self._tell(owner, event, "failed", reason=failure_reason(stage, error_type, message),
                       refunded=refunded(self.backend.db, event["job_id"]))

        return after

    def _write_requeue(self, s: Session, event: dict[str, Any], freed_at: dt.datetime | None) -> AfterCommit:
        if self._advance_in(s, event, JobState.QUEUED, expect=(JobState.DISPATCHED, JobState.SUBMITTED)) is None:
            return _nothing

        def after() -> None:
            log.info("job_id=%s node_id=%s back to the backlog: %s", event["job_id"], event.get("node_id"), event.get("reason"))
            self._free(event)

        return after


AfterCommit = Callable[[], None]


def _ended(event: dict[str, Any], freed_at: dt.datetime | None) -> Any:
    return _on_node(event, "ended_at", freed_at if freed_at is not None else utcnow())


def _on_node(event: dict[str, Any], field: str, arrival: dt.datetime) -> Any:
    """When the event's ``field`` says it happened on the node (ComfyUI's clock), if that is
    before ``arrival``; else ``arrival``. An event can reach the database long after the
    fact — an embedded studio killed before writing an end lost it with its in-process bus,
    and the agent rebuilt it from ComfyUI's history on adoption, a minute later; the node had
    its next jobs meanwhile. The node's time is bounded by the job's own record (never
    before its dispatch or start: another machine's clock may be behind)."""
    reported = event.get(field)
    if not isinstance(reported, (int, float)) or isinstance(reported, bool):
        return arrival
    try:
        at = dt.datetime.fromtimestamp(reported, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):  # nonsense from a broken clock
        return arrival
    if at >= arrival:
        return arrival
    on_node = literal(at, Job.dispatched_at.type)
    return case((Job.started_at > on_node, Job.started_at), (Job.dispatched_at > on_node, Job.dispatched_at),
                else_=on_node)


def _output_asset(event: dict[str, Any]) -> str:
    # An agent of the release before says "asset": agents upgrade after the workers.
    return str(event["asset_id"] if "asset_id" in event else event["asset"])


def _nothing() -> None:
    pass
