"""The dispatcher: hands queued jobs to nodes whenever a slot is free.

One pass reads the live nodes once, walks the backlog fairly across users, and for each
job atomically reserves the best capable slot in the registry; the reserved jobs move
``queued → dispatched`` with a conditional update (several per transaction), and only
after that commit are they published to their nodes (outbox order: a crash between the
two leaves a ``dispatched`` job that the sweeper republishes, never a published job the
database does not know). A pass's cost grows with the slots it fills, not with the
backlog (``python -m bench dispatch``).
Several dispatchers (threads or studio replicas) may run at once: the reservation and
the conditional update each let exactly one of them win.

Before its first pass, and whenever the registry's epoch changes (it lost its data: a
restarted studio's in-process registry, Redis restarted empty), a dispatcher first has
the reservations of the jobs already on nodes restored from the database (``restore``):
otherwise it would see their slots free and book them twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from backend.jobs import backlog, store
from backend import jobs
from backend.db.models import Job, StageAlias, User, utcnow
from backend.errors import DatabaseUnavailable, NotFound, StudioError, Unavailable
from backend.jobs.messages import JobMessage, Upload, prompt_id_of, upload_name
from backend.jobs.messages import StageAlias as AliasMessage
from backend.jobs.placement import DEFAULT_SWITCH_PENALTY, CapabilityCache, Needs, candidates
from backend.jobs.sizing import QueueSizing
from backend.ports.registry import Candidate, NodeView, choice_key
from backend.runtime import Backend
from backend.workflows import WorkflowSpec, build_prompt

log = logging.getLogger(__name__)

#: Passes one call of :meth:`Dispatcher.dispatch_once` may run. A pass runs again only
#: after losing a job to another dispatcher, which means that one made progress, so a
#: handful is never reached; the cap only keeps a scheduler thread from spinning.
MAX_PASSES = 10
#: Jobs a pass reads from the backlog per free slot: room for jobs no free node can run.
BACKLOG_PER_FREE_SLOT = 4
#: Reservations marked ``dispatched`` per transaction.
BATCH = 16
#: Nodes offered to the registry's atomic reserve: the best of the pass's copy.
RESERVE_CANDIDATES = 8
#: Job publishes of one batch in flight at once.
PUBLISHERS = 4


def stage_aliases(s: Session, spec: WorkflowSpec) -> dict[str, AliasMessage]:
    """:func:`backend.jobs.stages.aliases` read in the caller's transaction: the dispatcher reads
    them in the transaction that marks the job ``dispatched``, which costs one statement
    instead of a separate transaction (with its own connection check-out) per job, and
    still sees an administrator's override at once."""
    result: dict[str, AliasMessage] = {node: {"en": text.en, "zh": text.zh} for node, text in spec.stages.items()}
    for row in s.scalars(select(StageAlias).where(StageAlias.workflow == spec.name)):
        result[row.graph_node_id] = {"en": row.en, "zh": row.zh}
    return result


def job_message(
    backend: Backend, spec: WorkflowSpec, job: Job, attempt: int, *, aliases: dict[str, AliasMessage] | None = None
) -> JobMessage:
    """What the agent needs to run ``job``: the prompt, its inputs and how to report it."""
    uploads: list[Upload] = []
    names: dict[str, str] = {}
    # Images first: a mask names the node-side file of the image it is merged onto.
    for param in sorted(spec.file_params, key=lambda p: p.mask_of is not None):
        asset = job.inputs.get(param.name)
        if asset is None:
            continue
        if param.mask_of is None:
            names[param.name] = upload_name(asset)
            uploads.append({"asset_id": asset, "asset": asset, "name": names[param.name], "kind": "image"})
        else:
            image = job.inputs[param.mask_of]
            names[param.name] = upload_name(asset, mask_on=image)
            uploads.append({"asset_id": asset, "asset": asset, "name": names[param.name], "kind": "mask",
                            "original": names[param.mask_of]})
    for upload in uploads:
        url = backend.blobs.presign_get(upload["asset_id"], expires=backend.settings.s3_presign_seconds)
        if url is not None:
            upload["url"] = url
    prompt = build_prompt(spec, job.params, uploads=names, filename_prefix=f"studio/{job.id}")
    return {
        "job_id": job.id,
        "attempt": attempt,
        "prompt_id": prompt_id_of(job.id, attempt),
        "user_id": job.user_id,
        "workflow": spec.name,
        "prompt": prompt,
        "uploads": uploads,
        "output_nodes": [o.graph_node for o in spec.outputs],
        "stages": aliases if aliases is not None else _read_aliases(backend, spec),
        "estimate_seconds": job.estimate_seconds,
        "sent_at": time.time(),
    }


def _read_aliases(backend: Backend, spec: WorkflowSpec) -> dict[str, AliasMessage]:
    with backend.db.read() as s:
        return stage_aliases(s, spec)


def _with_reservation(view: NodeView, prompt_id: str, seconds: float) -> NodeView:
    return dataclasses.replace(view, reservations={**view.reservations, prompt_id: seconds})


@dataclass(frozen=True, eq=False)
class _Reserved:
    """A job holding a slot, not yet marked ``dispatched``."""

    job: Job
    spec: WorkflowSpec
    node: str
    attempt: int
    served_at: dt.datetime

    @property
    def prompt_id(self) -> str:
        return prompt_id_of(self.job.id, self.attempt)


class Dispatcher:
    """Runs dispatch passes when woken (a submit, a freed slot) and at least every ``interval``."""

    def __init__(
        self, backend: Backend, *, interval: float = 0.5, switch_penalty: float = DEFAULT_SWITCH_PENALTY,
        restore: Callable[[], int] = lambda: 0, sizing: QueueSizing | None = None,
    ) -> None:
        self.backend = backend
        #: How many of each node's slots to fill (``backend/jobs/sizing.py``).
        self.sizing = sizing if sizing is not None else QueueSizing()
        self.interval = interval
        self.switch_penalty = switch_penalty
        #: Restores the reservations of jobs on nodes from the database (the sweeper's).
        self.restore = restore
        self._epoch: str | None = None
        self._caps = CapabilityCache(backend.registry)
        #: Per pass: the nodes of the pass's copy able to run each kind of job.
        self._able: dict[Needs, list[Candidate]] = {}
        self._refused = False
        self._lost_race = False
        self._wake = threading.Event()
        self._woken_at: float | None = None
        self._pass_lock = threading.Lock()

    def wake(self) -> None:
        if self._woken_at is None:  # the first wake-up the next pass answers
            self._woken_at = time.monotonic()
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            woken, self._woken_at = self._woken_at, None  # after clear(): a later wake-up gets a pass of its own
            if stop.is_set():
                return
            try:
                if self.dispatch_once() and woken is not None:
                    # How long a freed slot (or a submit) waits for its job: the sizing keeps
                    # that much work queued on each node.
                    self.sizing.reacted(time.monotonic() - woken)
            except Unavailable as exc:  # database, registry or bus away: try again next pass
                log.warning("dispatch pass failed: %s", exc)
            except StudioError as exc:
                log.error("dispatch pass failed: %s", exc)
            except Exception:
                log.exception("dispatch pass crashed")

    def dispatch_once(self) -> int:
        """One pass over the backlog; the number of jobs given to nodes.

        A pass that reserved a slot and then lost the job to another dispatcher runs again
        with fresh reads: while it held that slot, a concurrent pass may have seen every
        node full and stopped, so without the rerun the slot stayed free, with jobs
        waiting, until the next periodic pass. With it, once concurrent passes return, no
        free slot is left that one of them could have filled.
        """
        with self._pass_lock:
            placed = 0
            for _ in range(MAX_PASSES):
                self._lost_race = False
                placed += self._pass()
                if not self._lost_race:
                    break
            return placed

    def _pass(self) -> int:
        registry = self.backend.registry
        epoch = registry.epoch()
        if epoch != self._epoch:
            restored = self.restore()  # raises while the database is away: no pass until it worked
            if restored or self._epoch is not None:
                log.warning("registry epoch %s: %d reservation(s) of jobs on nodes restored before dispatching",
                            epoch[:8], restored)
            self._epoch = epoch
        views = self._online()
        free = sum(v.free_slots for v in views.values())
        if not free:
            return 0
        placed = 0
        self._able = {}
        # Enough of each user's line to fill every free slot, should one user be alone, but
        # no more jobs in all than the free slots can take with room for jobs that fit no
        # free node: the pass costs what it places, not what waits behind.
        lines = backlog.lines(self.backend.db, per_user=max(backlog.PER_USER, free),
                              limit=max(BACKLOG_PER_FREE_SLOT * free, backlog.PER_USER))
        batch: list[_Reserved] = []
        retried: set[str] = set()
        try:
            while lines:
                line = lines.pop(0)
                job = line.popleft()
                reserved = self._reserve(job, views)
                if reserved is not None:
                    batch.append(reserved)
                    # The reservation just made is the only change we know of: count it in
                    # our copy instead of re-reading every node after each placement. A copy
                    # that is stale (another dispatcher) costs a refused reserve, never a
                    # double booking: the registry's reserve is the check that counts.
                    views[reserved.node] = _with_reservation(views[reserved.node], reserved.prompt_id, job.estimate_seconds)
                    free -= 1
                    if line:
                        lines.append(line)  # served: to the back of the line
                    if len(batch) >= BATCH:
                        full, batch = batch, []  # _commit answers for these slots from here on
                        placed += self._commit(full)
                    if not free:
                        break
                else:
                    if self._refused:  # our copy of the nodes was stale: read them again
                        views = self._online()
                        self._able = {}
                        free = sum(v.free_slots for v in views.values())
                        if not free:
                            break
                        if job.id not in retried:  # and give this job one more try with them
                            retried.add(job.id)
                            line.appendleft(job)
                    if line:
                        lines.insert(0, line)  # not placeable now: the same user keeps the turn
        except Exception:
            for r in batch:  # reserved but never marked dispatched: nobody else frees these slots soon
                self._release_quietly(r.node, r.prompt_id)
            raise
        return placed + (self._commit(batch) if batch else 0)

    def _online(self) -> dict[str, NodeView]:
        """The online nodes by id, each with as many slots as its sizing asks for now (at
        most one more than it holds, so a pass adds one job to a node beyond its first
        queued one; every end wakes the next pass). A soft limit: another dispatcher may
        fill one more, never more than the agent offers (the registry's reserve checks those)."""
        return {v.state.node_id: dataclasses.replace(v, state=dataclasses.replace(v.state, slots=self.sizing.slots(v)))
                for v in self.backend.registry.nodes() if v.state.online}

    def _reserve(self, job: Job, views: dict[str, NodeView]) -> _Reserved | None:
        """Reserve a slot for ``job`` on the best capable node, or None if it stays in the backlog."""
        backend = self.backend
        self._refused = False
        try:
            spec = backend.library.get(job.workflow)
        except NotFound:
            jobs.fail(backend.db, job.id, error_type="WorkflowRemoved", message=f"workflow {job.workflow} is no longer offered")
            return None
        needs = Needs.of(spec, job.params, job.memory_mb)
        able = self._able.get(needs)
        if able is None:  # which nodes can run it does not change during a pass; their free slots do
            able = self._able[needs] = candidates(views.values(), self._caps, needs, switch_penalty=self.switch_penalty)
        found = [c for c in able if views[c.node_id].free_slots]
        if not found:
            return None
        # The registry picks the best of the candidates atomically, reading each one it is
        # given: handing it the few best of our copy keeps a reserve's cost flat however
        # many nodes there are. It picks by the same order, so the choice is the same
        # unless our copy is stale, which costs a refusal and a fresh read.
        found = heapq.nsmallest(RESERVE_CANDIDATES, found, key=lambda c: choice_key(views[c.node_id], c))
        attempt = job.attempts + 1
        prompt_id = prompt_id_of(job.id, attempt)
        node = backend.registry.reserve(found, prompt_id, job.estimate_seconds)
        if node is None:
            self._refused = True
            return None
        return _Reserved(job=job, spec=spec, node=node, attempt=attempt, served_at=utcnow())

    def _commit(self, batch: list[_Reserved]) -> int:
        """Mark the reserved jobs ``dispatched`` in one transaction, then publish them; the
        number published. One commit per batch rather than per job: the commit's wait for
        the disk is most of what a placement costs the database."""
        backend = self.backend
        try:
            with backend.db.write() as s:
                dispatched = store.dispatch(s, [(r.job.id, r.job.attempts, r.node) for r in batch])
                moved = [r for r in batch if r.job.id in dispatched]
                served = {r.job.user_id: r.served_at for r in moved}
                if served:
                    s.execute(update(User).where(User.id.in_(list(served)))
                              .values(last_served_at=case(served, value=User.id)))
                specs = {r.spec.name: r.spec for r in moved}
                aliases = {name: stage_aliases(s, spec) for name, spec in specs.items()}
        except DatabaseUnavailable:
            # The jobs stay queued (or the commit's answer was lost and they are dispatched:
            # then the sweeper restores their slots and republishes them).
            for r in batch:
                self._release_quietly(r.node, r.prompt_id)
            raise
        for r in batch:
            if r not in moved:  # another dispatcher or a cancel got there first
                backend.registry.release(r.node, r.prompt_id)
                self._lost_race = True

        def send(r: _Reserved) -> bool:
            return self.publish(r.spec, r.job, r.node, r.attempt, stamped=dispatched[r.job.id],
                                aliases=aliases[r.spec.name])

        if len(moved) <= 1:
            return sum(map(send, moved))
        # Each confirmed publish waits for the broker's disk: several at once overlap.
        with ThreadPoolExecutor(max_workers=min(len(moved), PUBLISHERS), thread_name_prefix="dispatch-publish") as pool:
            return sum(pool.map(send, moved))

    def _release_quietly(self, node: str, prompt_id: str) -> None:
        try:
            self.backend.registry.release(node, prompt_id)
        except StudioError as exc:  # the sweeper releases a leftover slot later
            log.warning("prompt_id=%s node_id=%s slot not released now (%s)", prompt_id, node, exc)

    def publish(
        self, spec: WorkflowSpec, job: Job, node: str, attempt: int, *, stamped: dt.datetime,
        aliases: dict[str, AliasMessage],
    ) -> bool:
        """Send a job already marked ``dispatched`` (committed, at time ``stamped``) to
        ``node``; on failure put that dispatch back in the backlog (or fail the job if its
        prompt cannot be built) and free the slot."""
        backend = self.backend
        prompt_id = prompt_id_of(job.id, attempt)
        try:
            message = job_message(backend, spec, job, attempt, aliases=aliases)
            backend.bus.publish_job(node, message)
        except Unavailable as exc:
            with backend.db.write() as s:
                requeued = store.undispatch(s, job.id, attempt, stamped)
            if requeued:
                log.warning("job_id=%s node_id=%s publishing failed (%s); back to the backlog", job.id, node, exc)
                backend.registry.release(node, prompt_id)
            else:
                # The job moved on meanwhile: the broker had the message after all (an
                # unconfirmed publish may still be queued) and the agent reported it, the
                # sweeper republished this dispatch, or it was cancelled (which released the
                # slot). Releasing the slot here would make the agent drop a job the
                # database says it runs.
                log.warning("job_id=%s node_id=%s publishing reported %s, but the job moved on; keeping its slot",
                            job.id, node, exc)
            return False
        except StudioError as exc:  # the prompt cannot be built: the job can never run
            log.error("job_id=%s node_id=%s cannot build its prompt: %s", job.id, node, exc)
            jobs.fail(backend.db, job.id, error_type=type(exc).__name__, message=str(exc))
            backend.registry.release(node, prompt_id)
            return False
        self.sizing.dispatched(prompt_id)
        log.info("job_id=%s node_id=%s dispatched (attempt %d)", job.id, node, attempt)
        return True
