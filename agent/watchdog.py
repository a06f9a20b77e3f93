"""The watchdog: about once a second the job loop asks what the websocket may have missed.

Each tick it adopts what the journal still holds, cancels jobs whose reservation the
backend released, removes orphaned prompts after a new session, and reconciles every job
that asked for it, was submitted under a session that is gone, or has been silent past
``silence_timeout``: /history and /queue say what became of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from backend.errors import StudioError

from .comfy import ComfyClient
from .config import AgentConfig
from .followed import LOST_MESSAGE, Followed
from .following import Follower
from .jobs import ActiveJob
from .recovery import Recovery
from .reservations import Reservations
from .translate import stage_fields

log = logging.getLogger("agent.watchdog.Watchdog")

class Watchdog:
    """One node's tick (callers hold ``followed.lock``)."""

    def __init__(self, config: AgentConfig, *, client: ComfyClient, session: Callable[[], str | None],
                 followed: Followed, follower: Follower, recovery: Recovery, reservations: Reservations) -> None:
        self._config = config
        self._node = config.node_id
        self._client = client
        self._session = session
        self._followed = followed
        self._follower = follower
        self._recovery = recovery
        self._reservations = reservations

    def tick(self) -> None:
        self._recovery.adopt_journal()
        self._cancel_released()
        if self._recovery.orphan_check and self._session() is not None:
            self._recovery.clean_orphans()
        session = self._session()
        for job in list(self._followed.jobs.values()):
            orphaned = job.client_id is None or job.client_id != session
            if job.recheck or orphaned or job.silent_for() > self._config.silence_timeout:
                self._follower.guarded(job, self._reconcile, job)

    def _reconcile(self, job: ActiveJob) -> None:
        """Find out from /history and /queue what became of a job we lost track of."""
        entry = self._client.history(job.prompt_id)
        if entry is None:
            running, pending = self._client.queue()
            if job.prompt_id in running | pending:
                if job.prompt_id in running:
                    self._follower.mark_started(job)
                job.heard()
                job.recheck = False
                return  # still there: keep waiting
            entry = self._client.history(job.prompt_id)  # it may have finished in between
        if entry is not None:
            self._follower.finish(job, entry)
        elif job.started:
            log.warning("job_id=%s node_id=%s %s", job.job_id, self._node, LOST_MESSAGE)
            self._follower.end(job, "failed", error_type="Lost", message=LOST_MESSAGE, **stage_fields({}, None))
        else:
            log.warning("job_id=%s node_id=%s vanished before it started; requeue", job.job_id, self._node)
            self._follower.end(job, "requeue", reason=LOST_MESSAGE)

    def _cancel_released(self) -> None:
        """Stop jobs whose reservation the backend released (a cancel): no further events."""
        if not self._followed.jobs:
            return
        try:
            held = self._reservations.held()
            released = [job for job in self._followed.jobs.values() if job.prompt_id not in held]
            if released and not self._reservations.trusted():
                log.debug("node_id=%s reservations not trusted yet; no cancellations this tick", self._node)
                return
        except StudioError as exc:
            log.warning("node_id=%s cannot read reservations (%s); no cancellations this tick", self._node, exc)
            return
        for job in released:
            log.info("job_id=%s node_id=%s reservation released: cancelling on ComfyUI", job.job_id, self._node)
            self._followed.forget(job)
            self._recovery.stop_prompt(job.prompt_id)
