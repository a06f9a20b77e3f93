"""The jobs this agent follows on ComfyUI, and the one lock around them.

Intake adds a job (on the bus's consumer thread); the job loop, the watchdog and recovery
follow and end it (on the job loop's thread). The lock serialises the two around a
submission: ``submitted`` is published before the job loop can handle the prompt's first
websocket message, so the backend always sees ``submitted`` before ``started``. Callers
hold ``lock`` for every method here.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from backend.jobs.messages import JobMessage

from .config import AgentConfig
from .jobs import ActiveJob
from .journal import Entry, Journal
from .state import StateReporter

log = logging.getLogger("agent.followed.Followed")

#: Why a job fails (or goes back to the backlog) when ComfyUI no longer knows its prompt.
LOST_MESSAGE = "the node lost the job (ComfyUI restarted?)"
#: Prompts remembered as ended here (a copy of a job message may come minutes later).
ENDED_KEPT = 10_000


class Followed:
    """The followed jobs by prompt id, the journal entries still to adopt, and what the
    registry is told of them."""

    def __init__(self, config: AgentConfig, *, state: StateReporter) -> None:
        self._node = config.node_id
        self._progress_interval = config.progress_interval
        self._state = state
        self.lock = threading.RLock()
        self.journal = Journal(config.journal_dir)
        self.jobs: dict[str, ActiveJob] = {}
        #: Journaled jobs of an earlier run not yet adopted or dropped (retried every tick).
        self.unadopted: list[Entry] = []
        #: The prompt ComfyUI runs now, for previews that do not name theirs.
        self.running: str | None = None
        #: Prompts this agent stopped following (it published their last event, or their
        #: reservation was released), newest last. Another copy of the job message — the
        #: broker's redelivery, the sweeper's republish — may still arrive: submitting it
        #: then would run a job the backend has already requeued elsewhere.
        self._ended: OrderedDict[str, None] = OrderedDict()

    def taken(self, prompt_id: str) -> bool:
        """Whether ``prompt_id`` is followed here or was ended here: never submit it again."""
        return prompt_id in self.jobs or prompt_id in self._ended

    def ended(self, prompt_id: str) -> None:
        """Remember that this agent is done with ``prompt_id``."""
        self._ended[prompt_id] = None
        self._ended.move_to_end(prompt_id)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)

    def new_job(self, message: JobMessage, client_id: str | None) -> ActiveJob:
        """An :class:`ActiveJob` for ``message``, paced as configured (not yet followed)."""
        return ActiveJob.new(message, client_id, progress_interval=self._progress_interval)

    def journal_write(self, job: ActiveJob) -> None:
        try:
            self.journal.write(job.message, started=job.started)
        except OSError as exc:
            # Not fatal: the job runs; only an agent crash before its end would lose track.
            log.error("job_id=%s node_id=%s cannot journal the job (%s)", job.job_id, self._node, exc)

    def report(self) -> None:
        """Publish which prompts this agent follows (or will adopt from its journal), so the
        sweeper can tell a job on this node that nobody follows."""
        following = set(self.jobs) | {entry.prompt_id for entry in self.unadopted}
        self._state.update(following=tuple(sorted(following)))

    def forget(self, job: ActiveJob) -> None:
        """Stop following a job: out of memory, the journal and the node's state."""
        self.jobs.pop(job.prompt_id, None)
        self.ended(job.prompt_id)
        self.journal.remove(job.prompt_id)
        self.report()
        if self.running == job.prompt_id:
            self.running = None
        if self._state.current.running_job == job.job_id:
            self._state.update(running_job=None)
