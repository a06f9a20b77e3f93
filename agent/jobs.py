"""What the agent remembers about one job between its submission and its end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from backend.jobs.messages import JobMessage

from .translate import Progress, nodes_to_run


@dataclass
class ActiveJob:
    message: JobMessage
    #: The websocket session the prompt was submitted under. Events go to that session
    #: only, so once it is gone (or unknown: a prompt adopted after a restart of the agent)
    #: the job is followed by polling /history instead.
    client_id: str | None
    progress: Progress
    started: bool = False
    started_at: float | None = None  # monotonic, for a run time when ComfyUI gives none
    last_event: float = field(default_factory=time.monotonic)
    #: Output files already in the asset store (``translate.file_key``).
    files: set[str] = field(default_factory=set)
    #: Set when the prompt finished but its history entry was not readable yet, or when
    #: something must be re-checked (a reconnect, a lost publish): the watchdog's next tick
    #: reconciles the job instead of waiting for the silence timeout.
    recheck: bool = False

    @classmethod
    def new(cls, message: JobMessage, client_id: str | None) -> ActiveJob:
        return cls(message, client_id, Progress(nodes_to_run(message["prompt"], message["output_nodes"])))

    @property
    def job_id(self) -> str:
        return self.message["job_id"]

    @property
    def prompt_id(self) -> str:
        return self.message["prompt_id"]

    def heard(self) -> None:
        self.last_event = time.monotonic()

    def silent_for(self) -> float:
        return time.monotonic() - self.last_event
