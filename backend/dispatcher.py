"""The dispatcher: hands queued jobs to nodes whenever a slot is free (design §5).

One pass reads the live nodes once, walks the backlog fairly across users, and for each
job atomically reserves the best capable slot in the registry, moves the job
``queued → dispatched`` with a conditional update, and only after that commit publishes
the job to its node (outbox order: a crash between the two leaves a ``dispatched`` job
that the sweeper republishes, never a published job the database does not know).
Several dispatchers (threads or studio replicas) may run at once: the reservation and
the conditional update each let exactly one of them win.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import update

from . import backlog, jobs, stages
from .db.models import Job, User, utcnow
from .errors import BusError, NotFound, RegistryError, StudioError
from .messages import JobMessage, Upload, prompt_id, upload_name
from .placement import DEFAULT_SWITCH_PENALTY, CapabilityCache, Needs, candidates
from .runtime import Backend
from .workflows import WorkflowSpec, build_prompt

log = logging.getLogger(__name__)


def job_message(backend: Backend, spec: WorkflowSpec, job: Job, attempt: int) -> JobMessage:
    """What the agent needs to run ``job``: the prompt, its inputs and how to report it."""
    uploads: list[Upload] = []
    names: dict[str, str] = {}
    for param in spec.file_params:
        asset = job.inputs.get(param.name)
        if asset is None:
            continue
        kind = "mask" if param.type == "mask" else "image"
        names[param.name] = upload_name(asset, kind)
        uploads.append({"asset": asset, "name": names[param.name], "kind": kind})  # type: ignore[typeddict-item]
    prompt = build_prompt(spec, job.params, uploads=names, filename_prefix=f"studio/{job.id}")
    return {
        "job_id": job.id,
        "attempt": attempt,
        "prompt_id": prompt_id(job.id, attempt),
        "user_id": job.user_id,
        "workflow": spec.name,
        "prompt": prompt,
        "uploads": uploads,
        "output_nodes": [o.node for o in spec.outputs],
        "stages": stages.aliases(backend.db, spec),
        "estimate_seconds": job.estimate_seconds,
        "sent_at": time.time(),
    }


class Dispatcher:
    """Runs dispatch passes when woken (a submit, a freed slot) and at least every ``interval``."""

    def __init__(
        self, backend: Backend, *, interval: float = 0.5, switch_penalty: float = DEFAULT_SWITCH_PENALTY
    ) -> None:
        self.backend = backend
        self.interval = interval
        self.switch_penalty = switch_penalty
        self._caps = CapabilityCache(backend.registry)
        self._wake = threading.Event()
        self._pass_lock = threading.Lock()

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if stop.is_set():
                return
            try:
                self.dispatch_once()
            except StudioError as exc:  # registry or bus down: try again next pass
                log.warning("dispatch pass failed: %s", exc)
            except Exception:
                log.exception("dispatch pass crashed")

    def dispatch_once(self) -> int:
        """One pass over the backlog; the number of jobs given to nodes."""
        with self._pass_lock:
            return self._pass()

    def _pass(self) -> int:
        registry = self.backend.registry
        views = [v for v in registry.nodes() if v.state.online]
        free = sum(v.free_slots for v in views)
        if not free:
            return 0
        placed = 0
        # Enough of each user's line to fill every free slot, should one user be alone.
        lines = backlog.lines(self.backend.db, per_user=max(backlog.PER_USER, free))
        while lines:
            line = lines.pop(0)
            job = line.popleft()
            if self._place(job, views):
                placed += 1
                views = [v for v in registry.nodes() if v.state.online]
                if line:
                    lines.append(line)  # served: to the back of the line
                if not any(v.free_slots for v in views):
                    break
            elif line:
                lines.insert(0, line)  # not placeable now: the same user keeps the turn
        return placed

    def _place(self, job: Job, views: list) -> bool:  # type: ignore[type-arg]
        backend = self.backend
        try:
            spec = backend.library.get(job.workflow)
        except NotFound:
            jobs.fail(backend.db, job.id, error_type="WorkflowRemoved", message=f"workflow {job.workflow} is no longer offered")
            return False
        needs = Needs.of(spec, job.params, job.memory_mb)
        found = candidates((v for v in views if v.free_slots), self._caps, needs, switch_penalty=self.switch_penalty)
        if not found:
            return False
        attempt = job.attempts + 1
        ticket = prompt_id(job.id, attempt)
        node = backend.registry.reserve(found, ticket, job.estimate_seconds)
        if node is None:
            return False
        with backend.db.write() as s:
            moved = jobs.transition(
                s, job.id, "dispatched", expect=("queued",), expect_attempts=job.attempts, node_id=node, attempts=attempt
            )
            if moved:
                s.execute(update(User).where(User.id == job.user_id).values(last_served_at=utcnow()))
        if not moved:  # another dispatcher or a cancel got there first
            backend.registry.release(node, ticket)
            return False
        try:
            message = job_message(backend, spec, job, attempt)
            backend.bus.publish_job(node, message)
        except (BusError, RegistryError) as exc:
            log.warning("job %s: publishing to node %s failed (%s); back to the backlog", job.id, node, exc)
            with backend.db.write() as s:
                jobs.transition(s, job.id, "queued", expect=("dispatched",))
            backend.registry.release(node, ticket)
            return False
        except StudioError as exc:  # the prompt cannot be built: the job can never run
            log.error("job %s: cannot build its prompt: %s", job.id, exc)
            jobs.fail(backend.db, job.id, error_type=type(exc).__name__, message=str(exc))
            backend.registry.release(node, ticket)
            return False
        log.info("job %s dispatched to node %s (attempt %d)", job.id, node, attempt)
        return True
