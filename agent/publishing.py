"""What the agent tells the backend and the user about a job: lifecycle events (the
truth the backend's state follows) and user events (lossy, for the page), with progress
paced by each job's :class:`~agent.pacing.ProgressPacer`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from backend.errors import StudioError
from backend.jobs.messages import JobMessage, LifecycleType, lifecycle, user_event
from backend.ports.bus import Bus

from .jobs import ActiveJob

log = logging.getLogger("agent.publishing.Publisher")


class Publisher:
    """Publishes the events of one node's jobs on the bus."""

    def __init__(self, bus: Bus, *, node_id: str) -> None:
        self._bus = bus
        self._node = node_id

    def lifecycle(self, event_type: LifecycleType, message: JobMessage, /, **fields: Any) -> None:
        """Publish a lifecycle event; raises :class:`StudioError` if the bus refuses."""
        event = lifecycle(event_type, job_id=message["job_id"], attempt=message["attempt"], node_id=self._node, **fields)
        self._bus.publish_lifecycle(event)

    def lifecycle_safely(self, event_type: LifecycleType, message: JobMessage, /, **fields: Any) -> None:
        try:
            self.lifecycle(event_type, message, **fields)
        except StudioError as exc:
            # The dispatcher's sweeper republishes jobs that never reported back.
            log.error("job_id=%s node_id=%s cannot publish %s: %s", message["job_id"], self._node, event_type, exc)

    def user(self, job: ActiveJob, event_type: str, /, **fields: Any) -> None:
        event = user_event(event_type, job.job_id, **fields)
        try:
            self._bus.publish_user_event(job.message["user_id"], event)
        except StudioError as exc:  # user events are lossy by design; the database is the truth
            log.debug("job_id=%s node_id=%s user event %s dropped: %s", job.job_id, self._node, event_type, exc)

    def progress(self, job: ActiveJob, **fields: Any) -> None:
        """A progress event, unless one went out less than ``progress_interval`` ago."""
        now = job.pacer.offer(fields, time.monotonic())
        if now is not None:
            self.user(job, "progress", **now)

    def send_due_progress(self, jobs: Iterable[ActiveJob]) -> None:
        """Send the held-back progress values whose interval has passed."""
        now = time.monotonic()
        for job in list(jobs):
            fields = job.pacer.due(now)
            if fields is not None:
                self.user(job, "progress", **fields)


def progress_deadlines(jobs: Iterable[ActiveJob]) -> list[float]:
    """When held-back progress values fall due: the job loop wakes for them."""
    return [d for job in jobs if (d := job.pacer.deadline) is not None]
