"""The job side of the agent: takes jobs off the bus, runs them on ComfyUI, follows them
to their end and reports every step.

Threads and order:

- **intake** runs on the bus's consumer thread (:meth:`JobRunner.handle_delivery`):
  reservation check, idempotency check, uploads, ``POST /prompt``, ``submitted``, ack.
- **the job loop** (one thread) handles everything after submission: websocket messages
  (queued by the socket thread), preview frames, and the watchdog tick about once a
  second (cancellations, reconciliation).

One lock serialises the two around a submission: the ``submitted`` event is published
before the job loop can handle the prompt's first websocket message, so the backend
always sees ``submitted`` before ``started``.

A job's delivery is acked as soon as ComfyUI accepted the prompt and ``submitted`` is
confirmed, not at the end of the job: a GPU job can outlast RabbitMQ's consumer timeout,
and from then on the job is followed through ComfyUI, not through the bus.

Crashes: every job is journaled (``journal.py``) before its prompt is posted and until it
is settled. On start the runner **adopts** each journaled job whose reservation is still
held (it is followed by polling /history and /queue, and reported normally) and drops the
others, deleting or interrupting their prompts. After every new websocket session it
also removes **orphans**: prompts of ours in ComfyUI's queue that it does not follow and
whose reservation is not held here (the backend moved or failed the job), so a job never
runs twice. Missing reservations are acted on only while the registry is trusted: right
after it was found without this node's capabilities (Redis lost its data) the sweeper
first gets ``registry_grace`` to restore them from the database.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from backend.errors import AssetStoreError, InvalidUpload, StudioError, Unavailable
from backend.jobs.messages import (
    JobMessage,
    LifecycleType,
    job_of_prompt,
    lifecycle,
    user_event,
)
from backend.ports.bus import Bus, Delivery
from backend.ports.registry import Registry

from .comfy import ComfyClient
from .config import AgentConfig
from .errors import ComfyUnavailable, PromptRejected, UploadFailed
from .jobs import ActiveJob
from .journal import Entry, Journal
from .outputs import OutputStore
from .state import StateReporter
from .translate import (
    checkpoint_of,
    failure_fields,
    file_key,
    history_outcome,
    interrupted_fields,
    output_files,
    parse_preview,
    stage_alias,
    stage_fields,
)
from .uploads import Uploader, rename_inputs

log = logging.getLogger("agent.runner.JobRunner")

LOST_MESSAGE = "the node lost the job (ComfyUI restarted?)"


class JobRunner:
    def __init__(
        self,
        config: AgentConfig,
        *,
        client: ComfyClient,
        bus: Bus,
        registry: Registry,
        uploader: Uploader,
        outputs: OutputStore,
        state: StateReporter,
        session: Callable[[], str | None],
        on_unreachable: Callable[[], None],
        on_registry_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._node = config.node_id
        self._client = client
        self._bus = bus
        self._registry = registry
        self._uploader = uploader
        self._outputs = outputs
        self._state = state
        self._session = session
        self._on_unreachable = on_unreachable
        self._on_registry_lost = on_registry_lost
        self.journal = Journal(config.journal_dir)
        #: Journaled jobs of an earlier run not yet adopted or dropped (retried every tick).
        self._unadopted: list[Entry] = []
        #: Set by every new session: look for prompts of ours that nobody follows.
        self._orphan_check = False
        #: Until then, missing reservations may be the registry's data loss, not a release.
        self._distrust_until = 0.0
        self._lock = threading.RLock()
        self._jobs: dict[str, ActiveJob] = {}  # by prompt_id
        self._running: str | None = None  # prompt_id ComfyUI runs now, for legacy previews
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"agent-{self._node}-jobs", daemon=True)

    def start(self) -> None:
        """Adopt the jobs an earlier run of this agent left on ComfyUI, then run the job loop.

        Called before the agent consumes its queue, so a redelivered message of an adopted
        job finds it followed already."""
        self._unadopted = self.journal.entries()
        if self._unadopted:
            log.info("node_id=%s %d job(s) in the journal of an earlier run", self._node, len(self._unadopted))
            with self._lock:  # the registry may be away: then the job loop retries each tick
                self._safely("adopting journaled jobs", self._adopt_journal)
        with self._lock:
            self._report_following()
        self._thread.start()

    def registry_reset(self) -> None:
        """The registry was found without this node's data: do not take missing
        reservations for releases until the sweeper had time to restore them."""
        self._distrust_until = time.monotonic() + self._config.reservation_grace

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def active(self) -> dict[str, str]:
        """Active jobs as prompt_id → job_id (for the state and for operators)."""
        with self._lock:
            return {pid: job.job_id for pid, job in self._jobs.items()}

    # ---- inputs from the other threads (quick: they only queue) -------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        self._inbox.put(("message", message))

    def on_binary(self, frame: bytes) -> None:
        if self._config.previews:
            self._inbox.put(("binary", frame))

    def on_session(self, client_id: str) -> None:
        """A new websocket session: events of earlier sessions are lost, so re-check all."""
        self._inbox.put(("session", client_id))

    # ---- intake -------------------------------------------------------------------------

    def handle_delivery(self, delivery: Delivery) -> None:
        """Run one job message; settle the delivery exactly once."""
        message: JobMessage = delivery.body  # type: ignore[assignment]
        job_id, prompt_id = message["job_id"], message["prompt_id"]
        try:
            # Reservations are keyed by prompt id (job and attempt), as the dispatcher makes them.
            held = self._slot_held(prompt_id)
            if held is None:  # stopping before the registry could be believed again
                delivery.reject(requeue=True)
                return
            if not held:
                # The backend moved or cancelled it; running it here would run it twice.
                log.info("job_id=%s node_id=%s no longer holds a slot here; dropped", job_id, self._node)
                delivery.ack()
                return
            with self._lock:  # held so the job loop cannot report on an adopted job first
                known = prompt_id in self._jobs or self._adopt_if_known(message)
                if known:
                    self._journal_write(self._jobs[prompt_id])
                if known:
                    # Redelivered after it was submitted: confirm again (the first confirm
                    # may be what got lost), never submit again.
                    self._lifecycle("submitted", message, prompt_id=prompt_id)
            if known:
                delivery.ack()
                return
            if message.get("adopt_only"):
                self._settle_missing(message)
                delivery.ack()
                return
            renames = self._uploader.ensure(message["uploads"], job_id=job_id)
            prompt = rename_inputs(message["prompt"], renames)
            with self._lock:
                self._submit(message, prompt)
                self._lifecycle("submitted", message, prompt_id=prompt_id)
            delivery.ack()
        except PromptRejected as exc:
            log.warning("job_id=%s node_id=%s ComfyUI refused the prompt: %s", job_id, self._node, exc)
            self._lifecycle_safely(
                "failed", message, error_type="ValidationError", message=str(exc), **stage_fields(message["stages"], exc.graph_node)
            )
            delivery.ack()
        except UploadFailed as exc:
            log.error("job_id=%s node_id=%s %s", job_id, self._node, exc)
            self._lifecycle_safely("failed", message, error_type="InputMissing", message=str(exc), **stage_fields({}, None))
            delivery.ack()
        except ComfyUnavailable as exc:
            log.warning("job_id=%s node_id=%s ComfyUI unreachable before submission (%s); requeued", job_id, self._node, exc)
            self._on_unreachable()
            # Bounded pause so a dead ComfyUI does not turn into a tight redelivery loop
            # before the supervisor stops consuming.
            self._stop.wait(self._config.reconnect_min)
            delivery.reject(requeue=True)
        except Unavailable as exc:  # registry or bus trouble: nothing is lost, try again
            log.warning("job_id=%s node_id=%s cannot take the job now (%s); requeued", job_id, self._node, exc)
            self._stop.wait(self._config.reconnect_min)
            delivery.reject(requeue=True)
        except StudioError as exc:  # the job itself cannot run here; trying again changes nothing
            log.error("job_id=%s node_id=%s cannot run the job: %s", job_id, self._node, exc)
            self._lifecycle_safely("failed", message, error_type=type(exc).__name__, message=str(exc), **stage_fields({}, None))
            delivery.ack()

    def _settle_missing(self, message: JobMessage) -> None:
        """An adopt-only message (the backend has the job on this node, submitted or
        running) for a prompt neither followed here nor known to ComfyUI: ComfyUI lost it.
        It is never submitted again (it may have run): failed if it had started, else
        back to the backlog."""
        job_id = message["job_id"]
        if message.get("started"):
            log.warning("job_id=%s node_id=%s %s", job_id, self._node, LOST_MESSAGE)
            self._lifecycle("failed", message, error_type="Lost", message=LOST_MESSAGE, **stage_fields({}, None))
        else:
            log.warning("job_id=%s node_id=%s not on ComfyUI and never started; requeue", job_id, self._node)
            self._lifecycle("requeue", message, reason=LOST_MESSAGE)

    def _slot_held(self, prompt_id: str) -> bool | None:
        """Whether ``prompt_id`` holds a slot on this node. While the registry cannot be
        believed (it lost its data, see ``registry_reset``) a missing slot may be one the
        sweeper has not restored yet: wait for it, or for the registry to be trusted again,
        holding the delivery (requeueing it would spend the queue's delivery limit).
        None if the agent stops meanwhile."""
        while not self._registry.holds(self._node, prompt_id):
            if self._stop.is_set():
                return None
            if self._reservations_trusted():
                return False
            self._stop.wait(self._config.poll_interval)
        return True

    def _adopt_if_known(self, message: JobMessage) -> bool:
        """Track a prompt ComfyUI already has (a redelivery after an agent restart)."""
        prompt_id = message["prompt_id"]
        running, pending = self._client.queue()
        if prompt_id not in running | pending and self._client.history(prompt_id) is None:
            return False
        log.info("job_id=%s node_id=%s prompt %s already on ComfyUI; following it", message["job_id"], self._node, prompt_id)
        job = ActiveJob.new(message, client_id=None)  # its session is unknown: followed by polling
        job.recheck = True
        job.started = bool(message.get("started"))  # an adopt-only message says whether it ran
        for entry in [e for e in self._unadopted if e.prompt_id == prompt_id]:
            job.started = job.started or entry.started  # the journal knows whether it had started
            self._unadopted.remove(entry)
        self._jobs[prompt_id] = job
        self._report_following()
        return True

    def _submit(self, message: JobMessage, prompt: dict[str, Any]) -> None:
        client_id = self._session()
        job = ActiveJob.new(message, client_id)
        self._jobs[job.prompt_id] = job
        self._journal_write(job)  # before the prompt exists: a crash after the POST is adopted
        self._report_following()  # before the prompt exists too: the sweeper never sees it unfollowed
        try:
            answer = self._client.submit(prompt, prompt_id=job.prompt_id, client_id=client_id)
        except StudioError:
            del self._jobs[job.prompt_id]
            self.journal.remove(job.prompt_id)
            self._report_following()
            raise
        if answer.get("node_errors"):
            # Some output nodes failed validation and will silently not run.
            log.warning("job_id=%s node_id=%s some outputs will not run: %s", job.job_id, self._node, answer["node_errors"])
        log.info("job_id=%s node_id=%s submitted as %s", job.job_id, self._node, job.prompt_id)

    # ---- the job loop -------------------------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                kind, item = self._inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                kind, item = "", None
            try:
                with self._lock:
                    if kind == "message":
                        self._handle_message(item)
                    elif kind == "binary":
                        self._handle_preview(item)
                    elif kind == "session":
                        for job in self._jobs.values():
                            job.recheck = True
                        self._orphan_check = True
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self._config.poll_interval
                        self._tick()
            except Exception:  # noqa: BLE001 - the loop must outlive any single bad message
                log.exception("node_id=%s job loop: unexpected error (continuing)", self._node)

    def _handle_message(self, message: dict[str, Any]) -> None:
        kind, data = message.get("type"), message["data"]
        if kind == "status":
            remaining = data.get("status", {}).get("exec_info", {}).get("queue_remaining")
            if isinstance(remaining, int):
                self._state.update(queue_remaining=remaining)
            return
        job = self._jobs.get(str(data.get("prompt_id")))
        if job is None:
            return  # not ours, or a job that was cancelled or already finished
        job.heard()
        self._guarded(job, self._apply, job, kind, data)

    def _apply(self, job: ActiveJob, kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            self._mark_started(job)
        elif kind == "execution_cached":
            job.progress.cached([str(n) for n in data.get("nodes", [])])
        elif kind == "executing":
            if data.get("node") is None:
                self._finish_from_history(job)  # the end signal; history is written by now
                return
            self._mark_started(job)
            graph_node = str(data.get("display_node") or data["node"])
            job.progress.node_started(graph_node)
            self._user(job, "stage", graph_node=graph_node, alias=stage_alias(job.message["stages"], graph_node))
            self._user(job, "progress", value=0, max=1, fraction=job.progress.fraction)
        elif kind == "progress":
            value, maximum = data.get("value", 0), data.get("max", 0)
            job.progress.node_step(value, maximum)
            self._user(job, "progress", value=value, max=maximum, fraction=job.progress.fraction)
        elif kind == "executed":
            self._store_outputs(job, str(data.get("display_node") or data.get("node")), data.get("output") or {})
        elif kind == "execution_success":
            self._finish_from_history(job)
        elif kind == "execution_error":
            self._end(job, "failed", **failure_fields(data, job.message["stages"]))
        elif kind == "execution_interrupted":
            self._end(job, "failed", **interrupted_fields(data, job.message["stages"]))

    def _guarded(self, job: ActiveJob, step: Callable[..., None], *args: Any) -> None:
        """Run one step of a job; failures of our side leave it for the watchdog to redo."""
        try:
            step(*args)
        except InvalidUpload as exc:  # the asset store refused an output (over the size cap)
            log.error("job_id=%s node_id=%s output refused: %s", job.job_id, self._node, exc)
            self._end(job, "failed", error_type="OutputRejected", message=str(exc), **stage_fields({}, None))
        except AssetStoreError as exc:  # the disk is full (or broken): the result cannot be kept
            log.error("job_id=%s node_id=%s output not stored: %s", job.job_id, self._node, exc)
            self._end(job, "failed", error_type="OutputNotStored", message=str(exc), **stage_fields({}, None))
        except ComfyUnavailable as exc:
            log.debug("job_id=%s node_id=%s postponed, ComfyUI unreachable: %s", job.job_id, self._node, exc)
            job.recheck = True
        except Unavailable as exc:  # the bus or the registry; the job is re-derived from /history
            log.warning("job_id=%s node_id=%s will be re-checked: %s", job.job_id, self._node, exc)
            job.recheck = True
        except StudioError as exc:  # a problem of this job that re-checking cannot fix
            log.error("job_id=%s node_id=%s cannot be followed: %s", job.job_id, self._node, exc)
            self._end(job, "failed", error_type=type(exc).__name__, message=str(exc), **stage_fields({}, None))

    def _handle_preview(self, frame: bytes) -> None:
        preview = parse_preview(frame)
        if preview is None or not preview.image:
            return
        job = self._jobs.get(preview.prompt_id or self._running or "")
        if job is None:
            return
        job.heard()
        try:
            asset = self._outputs.store_preview(preview.image)
        except (StudioError, OSError) as exc:
            log.warning("job_id=%s node_id=%s preview not stored: %s", job.job_id, self._node, exc)
            return
        self._user(job, "preview", asset=asset, kind="image")

    def _mark_started(self, job: ActiveJob) -> None:
        self._running = job.prompt_id
        if job.started:
            return
        # The backend tells the user "started" once the database agrees; not repeated here.
        self._lifecycle("started", job.message)  # first: if it fails, the next try sends it again
        job.started, job.started_at = True, time.monotonic()
        self._journal_write(job)  # after the event: "started" in the journal means published
        self._state.update(
            running_job=job.job_id, loaded_checkpoint=checkpoint_of(job.message["prompt"]) or self._state.current.loaded_checkpoint
        )

    def _store_outputs(self, job: ActiveJob, graph_node: str, ui: dict[str, Any]) -> None:
        """Download the result files of a graph node into the asset store; ``output`` for each."""
        wanted = job.message["output_nodes"]
        if wanted and graph_node not in wanted:
            return  # a preview or helper node, not a result of the workflow
        for ref in output_files(ui):
            key = file_key(graph_node, ref)
            if key in job.files:
                continue
            stored = self._outputs.fetch(ref, job_id=job.job_id)
            self._lifecycle("output", job.message, graph_node=graph_node, position=len(job.files), seconds=None, **stored.fields())
            job.files.add(key)
            log.info("job_id=%s node_id=%s output %s stored as %s", job.job_id, self._node, ref["filename"], stored.asset)

    def _finish_from_history(self, job: ActiveJob) -> None:
        entry = self._client.history(job.prompt_id)
        if entry is None:
            job.recheck = True  # written a moment after execution_success; the tick retries
            return
        self._finish(job, entry)

    def _finish(self, job: ActiveJob, entry: dict[str, Any]) -> None:
        """End a job from its history entry (the truth, whatever the socket said)."""
        self._mark_started(job)
        outcome = history_outcome(entry)
        if outcome.status == "error":
            self._end(job, "failed", **failure_fields(outcome.payload, job.message["stages"]))
            return
        if outcome.status == "interrupted":
            self._end(job, "failed", **interrupted_fields(outcome.payload, job.message["stages"]))
            return
        # Outputs not seen on the socket (cached ones, or events lost with a session).
        for graph_node, ui in (entry.get("outputs") or {}).items():
            self._store_outputs(job, str(graph_node), ui)
        seconds = outcome.seconds
        if seconds is None:
            seconds = time.monotonic() - (job.started_at or time.monotonic())
        if self._end(job, "succeeded", seconds=round(seconds, 3)):
            self._state.record_run(seconds, float(job.message.get("estimate_seconds") or 0))

    def _end(self, job: ActiveJob, event_type: LifecycleType, /, **fields: Any) -> bool:
        """Publish the job's last event and forget it; on a bus failure keep it for a retry."""
        try:
            self._lifecycle(event_type, job.message, **fields)
        except StudioError as exc:
            log.error("job_id=%s node_id=%s cannot publish %s (%s); will retry", job.job_id, self._node, event_type, exc)
            job.recheck = True
            return False
        log.info("job_id=%s node_id=%s %s %s", job.job_id, self._node, event_type, fields.get("message", ""))
        self._forget(job)
        return True

    def _forget(self, job: ActiveJob) -> None:
        self._jobs.pop(job.prompt_id, None)
        self.journal.remove(job.prompt_id)
        self._report_following()
        if self._running == job.prompt_id:
            self._running = None
        if self._state.current.running_job == job.job_id:
            self._state.update(running_job=None)

    # ---- the watchdog -------------------------------------------------------------------

    def _tick(self) -> None:
        if self._unadopted:
            self._safely("adopting journaled jobs", self._adopt_journal)
        self._cancel_released()
        if self._orphan_check and self._session() is not None:
            self._safely("removing orphaned prompts", self._clean_orphans)
        session = self._session()
        for job in list(self._jobs.values()):
            orphaned = job.client_id is None or job.client_id != session
            if job.recheck or orphaned or job.silent_for() > self._config.silence_timeout:
                self._guarded(job, self._reconcile, job)

    def _reconcile(self, job: ActiveJob) -> None:
        """Find out from /history and /queue what became of a job we lost track of."""
        entry = self._client.history(job.prompt_id)
        if entry is None:
            running, pending = self._client.queue()
            if job.prompt_id in running | pending:
                if job.prompt_id in running:
                    self._mark_started(job)
                job.heard()
                job.recheck = False
                return  # still there: keep waiting
            entry = self._client.history(job.prompt_id)  # it may have finished in between
        if entry is not None:
            self._finish(job, entry)
        elif job.started:
            log.warning("job_id=%s node_id=%s %s", job.job_id, self._node, LOST_MESSAGE)
            self._end(job, "failed", error_type="Lost", message=LOST_MESSAGE, **stage_fields({}, None))
        else:
            log.warning("job_id=%s node_id=%s vanished before it started; requeue", job.job_id, self._node)
            self._end(job, "requeue", reason=LOST_MESSAGE)

    def _cancel_released(self) -> None:
        """Stop jobs whose reservation the backend released (a cancel): no further events."""
        if not self._jobs:
            return
        try:
            held = self._registry.reservations(self._node)
            released = [job for job in self._jobs.values() if job.prompt_id not in held]
            if released and not self._reservations_trusted():
                log.debug("node_id=%s reservations not trusted yet; no cancellations this tick", self._node)
                return
        except StudioError as exc:
            log.warning("node_id=%s cannot read reservations (%s); no cancellations this tick", self._node, exc)
            return
        for job in released:
            log.info("job_id=%s node_id=%s reservation released: cancelling on ComfyUI", job.job_id, self._node)
            self._forget(job)
            self._stop_prompt(job.prompt_id)

    def _reservations_trusted(self) -> bool:
        """Whether a missing reservation means a release. Not while the registry has just
        lost its data (no capabilities of ours): the sweeper restores reservations first."""
        if time.monotonic() < self._distrust_until:
            return False
        if self._registry.capabilities(self._node) is None:
            log.warning("node_id=%s the registry lost this node's data (Redis restarted?); "
                        "waiting for the reservations to be restored", self._node)
            self.registry_reset()
            self._on_registry_lost()
            return False
        return True

    def _stop_prompt(self, prompt_id: str) -> None:
        """Delete a prompt from ComfyUI's queue, or interrupt it if it runs (best effort)."""
        try:
            running, pending = self._client.queue()
            if prompt_id in pending:
                self._client.delete_pending(prompt_id)
            elif prompt_id in running:
                self._client.interrupt(prompt_id)
        except ComfyUnavailable as exc:
            log.warning("prompt %s node_id=%s not stopped on ComfyUI (%s); the next session's orphan check will",
                        prompt_id, self._node, exc)
            self._orphan_check = True

    def _adopt_journal(self) -> None:
        """Follow again the journaled jobs whose reservation is held here; drop the others."""
        held = self._registry.reservations(self._node)
        trusted: bool | None = None
        for entry in list(self._unadopted):
            prompt_id, job_id = entry.prompt_id, entry.message["job_id"]
            if prompt_id in self._jobs:
                pass  # a redelivery adopted it first
            elif prompt_id in held:
                job = ActiveJob.new(entry.message, client_id=None)  # its session is gone: polled
                job.started, job.recheck = entry.started, True
                self._jobs[prompt_id] = job
                log.info("job_id=%s node_id=%s adopted from the journal (%s)", job_id, self._node,
                         "started" if entry.started else "not started")
            else:
                if trusted is None:
                    trusted = self._reservations_trusted()
                if not trusted:
                    continue  # decided once the registry can be believed again
                log.info("job_id=%s node_id=%s journaled, but its slot is no longer held here; dropped", job_id, self._node)
                self.journal.remove(prompt_id)
                self._stop_prompt(prompt_id)
            self._unadopted.remove(entry)
        self._report_following()

    def _clean_orphans(self) -> None:
        """Delete or interrupt prompts of ours that no job here follows and whose slot is
        not held here: the backend gave the job to another node or ended it."""
        running, pending = self._client.queue()
        untracked = {p for p in running | pending if p not in self._jobs and job_of_prompt(p) is not None}
        unadopted = {entry.prompt_id for entry in self._unadopted}
        if untracked - unadopted:
            held = self._registry.reservations(self._node)
            strays = untracked - unadopted - set(held)
            if strays and not self._reservations_trusted():
                return  # the next tick tries again
            for prompt_id in sorted(strays):
                log.warning("prompt %s node_id=%s on ComfyUI without a reservation here; removed", prompt_id, self._node)
                if prompt_id in pending:
                    self._client.delete_pending(prompt_id)
                else:
                    self._client.interrupt(prompt_id)
        self._orphan_check = False

    def _safely(self, what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except StudioError as exc:  # ComfyUI or the registry away: the next tick retries
            log.warning("node_id=%s %s postponed: %s", self._node, what, exc)

    def _report_following(self) -> None:
        """Publish which prompts this agent follows (or will adopt from its journal), so the
        sweeper can tell a job on this node that nobody follows (caller holds the lock)."""
        following = set(self._jobs) | {entry.prompt_id for entry in self._unadopted}
        self._state.update(following=tuple(sorted(following)))

    # ---- the journal --------------------------------------------------------------------

    def _journal_write(self, job: ActiveJob) -> None:
        try:
            self.journal.write(job.message, started=job.started)
        except OSError as exc:
            # Not fatal: the job runs; only an agent crash before its end would lose track.
            log.error("job_id=%s node_id=%s cannot journal the job (%s)", job.job_id, self._node, exc)

    # ---- publishing ---------------------------------------------------------------------

    def _lifecycle(self, event_type: LifecycleType, message: JobMessage, /, **fields: Any) -> None:
        event = lifecycle(event_type, job_id=message["job_id"], attempt=message["attempt"], node_id=self._node, **fields)
        self._bus.publish_lifecycle(event)

    def _lifecycle_safely(self, event_type: LifecycleType, message: JobMessage, /, **fields: Any) -> None:
        try:
            self._lifecycle(event_type, message, **fields)
        except StudioError as exc:
            # The dispatcher's sweeper republishes jobs that never reported back.
            log.error("job_id=%s node_id=%s cannot publish %s: %s", message["job_id"], self._node, event_type, exc)

    def _user(self, job: ActiveJob, event_type: str, /, **fields: Any) -> None:
        event = user_event(event_type, job.job_id, **fields)
        try:
            self._bus.publish_user_event(job.message["user_id"], event)
        except StudioError as exc:  # user events are lossy by design; the database is the truth
            log.debug("job_id=%s node_id=%s user event %s dropped: %s", job.job_id, self._node, event_type, exc)
