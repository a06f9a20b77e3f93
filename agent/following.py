"""Following a submitted job through ComfyUI: its websocket messages and its history entry
applied to the job, its outputs stored, its end published.

ComfyUI's vocabulary is read by the pure functions of ``translate.py``; this room turns
what they say into events and keeps the job's bookkeeping. The history entry is the truth
whatever the socket said: a job ends from it (``finish``), also when the watchdog finds a
job the socket lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from backend.errors import AssetStoreError, AssetStoreUnavailable, InvalidUpload, StudioError, Unavailable
from backend.jobs.messages import LifecycleType

from .comfy import ComfyClient
from .config import AgentConfig
from .errors import ComfyUnavailable
from .followed import Followed
from .jobs import ActiveJob
from .outputs import OutputStore
from .publishing import Publisher
from .state import StateReporter
from .translate import (
    checkpoint_of,
    failure_fields,
    file_key,
    comfy_time,
    history_outcome,
    interrupted_fields,
    output_files,
    parse_preview,
    stage_alias,
    stage_fields,
)

log = logging.getLogger("agent.following.Follower")


class Follower:
    """Applies ComfyUI's messages to the followed jobs (callers hold ``followed.lock``)."""

    def __init__(self, config: AgentConfig, *, client: ComfyClient, outputs: OutputStore, state: StateReporter,
                 followed: Followed, publisher: Publisher) -> None:
        self._node = config.node_id
        self._client = client
        self._outputs = outputs
        self._state = state
        self._followed = followed
        self._publish = publisher

    def handle_message(self, message: dict[str, Any]) -> None:
        """One websocket message (JSON) of ComfyUI."""
        kind, data = message.get("type"), message["data"]
        if kind == "status":
            remaining = data.get("status", {}).get("exec_info", {}).get("queue_remaining")
            if isinstance(remaining, int):
                self._state.update(queue_remaining=remaining)
            return
        job = self._followed.jobs.get(str(data.get("prompt_id")))
        if job is None:
            return  # not ours, or a job that was cancelled or already finished
        job.heard()
        self.guarded(job, self._apply, job, kind, data)

    def handle_preview(self, frame: bytes) -> None:
        """One binary websocket frame: a preview image, stored and announced to the user."""
        preview = parse_preview(frame)
        if preview is None or not preview.image:
            return
        job = self._followed.jobs.get(preview.prompt_id or self._followed.running or "")
        if job is None:
            return
        job.heard()
        try:
            asset_id = self._outputs.store_preview(preview.image)
        except (StudioError, OSError) as exc:
            log.warning("job_id=%s node_id=%s preview not stored: %s", job.job_id, self._node, exc)
            return
        self._publish.user(job, "preview", asset_id=asset_id, kind="image")

    def _apply(self, job: ActiveJob, kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            self.mark_started(job, at=comfy_time(data))
        elif kind == "execution_cached":
            job.progress.cached([str(n) for n in data.get("nodes", [])])
        elif kind == "executing":
            if data.get("node") is None:
                self._finish_from_history(job)  # the end signal; history is written by now
                return
            self.mark_started(job)
            graph_node = str(data.get("display_node") or data["node"])
            job.progress.node_started(graph_node)
            self._publish.user(job, "stage", graph_node=graph_node, alias=stage_alias(job.message["stages"], graph_node))
            self._publish.progress(job, value=0, max=1, fraction=job.progress.fraction)
        elif kind == "progress":
            value, maximum = data.get("value", 0), data.get("max", 0)
            job.progress.node_step(value, maximum)
            self._publish.progress(job, value=value, max=maximum, fraction=job.progress.fraction)
        elif kind == "executed":
            self._store_outputs(job, str(data.get("display_node") or data.get("node")), data.get("output") or {})
        elif kind == "execution_success":
            self._finish_from_history(job)
        elif kind == "execution_error":
            self.end(job, "failed", ended_at=comfy_time(data), **failure_fields(data, job.message["stages"]))
        elif kind == "execution_interrupted":
            self.end(job, "failed", ended_at=comfy_time(data), **interrupted_fields(data, job.message["stages"]))

    def guarded(self, job: ActiveJob, step: Callable[..., None], *args: Any) -> None:
        """Run one step of a job; failures of our side leave it for the watchdog to redo."""
        try:
            step(*args)
        except InvalidUpload as exc:  # the asset store refused an output (over the size cap)
            log.error("job_id=%s node_id=%s output refused: %s", job.job_id, self._node, exc)
            self.end(job, "failed", error_type="OutputRejected", message=str(exc), **stage_fields({}, None))
        except AssetStoreUnavailable as exc:  # the object store is away: the outputs wait on ComfyUI
            log.warning("job_id=%s node_id=%s outputs not stored yet, will be re-checked: %s", job.job_id, self._node, exc)
            job.recheck = True
        except AssetStoreError as exc:  # the disk is full (or broken): the result cannot be kept
            log.error("job_id=%s node_id=%s output not stored: %s", job.job_id, self._node, exc)
            self.end(job, "failed", error_type="OutputNotStored", message=str(exc), **stage_fields({}, None))
        except ComfyUnavailable as exc:
            log.debug("job_id=%s node_id=%s postponed, ComfyUI unreachable: %s", job.job_id, self._node, exc)
            job.recheck = True
        except Unavailable as exc:  # the bus or the registry; the job is re-derived from /history
            log.warning("job_id=%s node_id=%s will be re-checked: %s", job.job_id, self._node, exc)
            job.recheck = True
        except StudioError as exc:  # a problem of this job that re-checking cannot fix
            log.error("job_id=%s node_id=%s cannot be followed: %s", job.job_id, self._node, exc)
            self.end(job, "failed", error_type=type(exc).__name__, message=str(exc), **stage_fields({}, None))

    def mark_started(self, job: ActiveJob, *, at: float | None = None) -> None:
        """``at``: when ComfyUI says the prompt started (its clock, epoch seconds), if known."""
        self._followed.running = job.prompt_id
        if job.started:
            return
        # The backend tells the user "started" once the database agrees; not repeated here.
        self._publish.lifecycle("started", job.message, started_at=at)  # first: if it fails, the next try sends it again
        job.started, job.started_at = True, time.monotonic()
        self._followed.journal_write(job)  # after the event: "started" in the journal means published
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
            self._publish.lifecycle("output", job.message, graph_node=graph_node, position=len(job.files), seconds=None, **stored.fields())
            job.files.add(key)
            log.info("job_id=%s node_id=%s output %s stored as %s", job.job_id, self._node, ref["filename"], stored.asset_id)

    def _finish_from_history(self, job: ActiveJob) -> None:
        entry = self._client.history(job.prompt_id)
        if entry is None:
            job.recheck = True  # written a moment after execution_success; the tick retries
            return
        self.finish(job, entry)

    def finish(self, job: ActiveJob, entry: dict[str, Any]) -> None:
        """End a job from its history entry (the truth, whatever the socket said). The
        events carry ComfyUI's own times: an end read from history after a restart may come
        long after the node finished the prompt, and the backend records when it did."""
        outcome = history_outcome(entry)
        self.mark_started(job, at=outcome.started_at)
        if outcome.status == "error":
            self.end(job, "failed", ended_at=outcome.ended_at, **failure_fields(outcome.payload, job.message["stages"]))
            return
        if outcome.status == "interrupted":
            self.end(job, "failed", ended_at=outcome.ended_at, **interrupted_fields(outcome.payload, job.message["stages"]))
            return
        # Outputs not seen on the socket (cached ones, or events lost with a session).
        for graph_node, ui in (entry.get("outputs") or {}).items():
            self._store_outputs(job, str(graph_node), ui)
        seconds = outcome.seconds
        if seconds is None:
            seconds = time.monotonic() - (job.started_at or time.monotonic())
        if self.end(job, "succeeded", seconds=round(seconds, 3), ended_at=outcome.ended_at):
            self._state.record_run(seconds, float(job.message.get("estimate_seconds") or 0))

    def end(self, job: ActiveJob, event_type: LifecycleType, /, **fields: Any) -> bool:
        """Publish the job's last event and forget it; on a bus failure keep it for a retry."""
        try:
            self._publish.lifecycle(event_type, job.message, **fields)
        except StudioError as exc:
            log.error("job_id=%s node_id=%s cannot publish %s (%s); will retry", job.job_id, self._node, event_type, exc)
            job.recheck = True
            return False
        log.info("job_id=%s node_id=%s %s %s", job.job_id, self._node, event_type, fields.get("message", ""))
        self._followed.forget(job)
        return True
