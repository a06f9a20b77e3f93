"""After a crash or a lost session: adopting journaled jobs and removing orphaned prompts.

Every job is journaled (``journal.py``) before its prompt is posted and until it is
settled. On start the agent **adopts** each journaled job whose reservation is still held
(it is followed by polling /history and /queue, and reported normally) and drops the
others, deleting or interrupting their prompts; what cannot be decided yet (the registry
away or not trusted, see ``reservations.py``) is retried every watchdog tick. After every
new websocket session it also removes **orphans**: prompts of ours in ComfyUI's queue that
it does not follow and whose reservation is not held here (the backend moved or failed the
job), so a job never runs twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from backend.errors import StudioError
from backend.jobs.messages import JobMessage, job_of_prompt

from .comfy import ComfyClient
from .config import AgentConfig
from .errors import ComfyUnavailable
from .followed import Followed
from .reservations import Reservations

log = logging.getLogger("agent.recovery.Recovery")


class Recovery:
    """Adoption and orphan clean-up for one node (callers hold ``followed.lock``)."""

    def __init__(self, config: AgentConfig, *, client: ComfyClient, followed: Followed,
                 reservations: Reservations) -> None:
        self._node = config.node_id
        self._client = client
        self._followed = followed
        self._reservations = reservations
        #: Set by every new session: look for prompts of ours that nobody follows.
        self.orphan_check = False

    def read_journal(self) -> None:
        """Take the journal of an earlier run as the jobs to adopt, and adopt what can be."""
        self._followed.unadopted = self._followed.journal.entries()
        if self._followed.unadopted:
            log.info("node_id=%s %d job(s) in the journal of an earlier run", self._node, len(self._followed.unadopted))
            self.adopt_journal()  # the registry may be away: then the watchdog retries each tick

    def adopt_journal(self) -> None:
        """Adopt (or drop) the journaled jobs not decided yet; postponed on trouble."""
        if self._followed.unadopted:
            _safely(self._node, "adopting journaled jobs", self._adopt_journal)

    def clean_orphans(self) -> None:
        """Remove orphaned prompts once a new session asked for it; postponed on trouble."""
        _safely(self._node, "removing orphaned prompts", self._clean_orphans)

    def adopt_if_known(self, message: JobMessage) -> bool:
        """Track a prompt ComfyUI already has (a redelivery after an agent restart)."""
        followed = self._followed
        prompt_id = message["prompt_id"]
        running, pending = self._client.queue()
        if prompt_id not in running | pending and self._client.history(prompt_id) is None:
            return False
        log.info("job_id=%s node_id=%s prompt %s already on ComfyUI; following it", message["job_id"], self._node, prompt_id)
        job = followed.new_job(message, client_id=None)  # its session is unknown: followed by polling
        job.recheck = True
        job.started = bool(message.get("started"))  # an adopt-only message says whether it ran
        for entry in [e for e in followed.unadopted if e.prompt_id == prompt_id]:
            job.started = job.started or entry.started  # the journal knows whether it had started
            followed.unadopted.remove(entry)
        followed.jobs[prompt_id] = job
        followed.report()
        return True

    def stop_prompt(self, prompt_id: str) -> None:
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
            self.orphan_check = True

    def _adopt_journal(self) -> None:
        """Follow again the journaled jobs whose reservation is held here; drop the others."""
        followed = self._followed
        held = self._reservations.held()
        trusted: bool | None = None
        for entry in list(followed.unadopted):
            prompt_id, job_id = entry.prompt_id, entry.message["job_id"]
            if prompt_id in followed.jobs:
                pass  # a redelivery adopted it first
            elif prompt_id in held:
                job = followed.new_job(entry.message, client_id=None)  # its session is gone: polled
                job.started, job.recheck = entry.started, True
                followed.jobs[prompt_id] = job
                log.info("job_id=%s node_id=%s adopted from the journal (%s)", job_id, self._node,
                         "started" if entry.started else "not started")
            else:
                if trusted is None:
                    trusted = self._reservations.trusted()
                if not trusted:
                    continue  # decided once the registry can be believed again
                log.info("job_id=%s node_id=%s journaled, but its slot is no longer held here; dropped", job_id, self._node)
                followed.journal.remove(prompt_id)
                self.stop_prompt(prompt_id)
            followed.unadopted.remove(entry)
        followed.report()

    def _clean_orphans(self) -> None:
        """Delete or interrupt prompts of ours that no job here follows and whose slot is
        not held here: the backend gave the job to another node or ended it."""
        running, pending = self._client.queue()
        untracked = {p for p in running | pending if p not in self._followed.jobs and job_of_prompt(p) is not None}
        unadopted = {entry.prompt_id for entry in self._followed.unadopted}
        if untracked - unadopted:
            strays = untracked - unadopted - self._reservations.held()
            if strays and not self._reservations.trusted():
                return  # the next tick tries again
            for prompt_id in sorted(strays):
                log.warning("prompt %s node_id=%s on ComfyUI without a reservation here; removed", prompt_id, self._node)
                if prompt_id in pending:
                    self._client.delete_pending(prompt_id)
                else:
                    self._client.interrupt(prompt_id)
        self.orphan_check = False


def _safely(node_id: str, what: str, step: Callable[[], None]) -> None:
    try:
        step()
    except StudioError as exc:  # ComfyUI or the registry away: the next tick retries
        log.warning("node_id=%s %s postponed: %s", node_id, what, exc)
