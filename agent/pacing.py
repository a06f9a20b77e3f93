"""Progress paced for people: at most one progress event per interval, the latest never lost.

ComfyUI sends a ``progress`` message for every sampler step — hundreds a second with a
fast sampler, far more than a browser can show or the bus needs to carry. Everything else
a user sees (a stage change, a preview, an output, the end) goes out at once; progress
goes out at most once per ``interval`` per job. A value held back is not dropped: it goes
out when its interval has passed (the agent's loop wakes for it), unless a newer value
replaced it first — or the job ended, whose own event says 100 %.

Pure bookkeeping with the clock passed in, so the rule is tested without waiting.
"""

from __future__ import annotations

from typing import Any

#: Default spacing of two progress events of one job: ten a second is smooth to the eye.
DEFAULT_INTERVAL = 0.1


class ProgressPacer:
    """The pacing of one job's progress events."""

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.interval = interval
        self._last_sent: float | None = None
        self._pending: dict[str, Any] | None = None

    def offer(self, fields: dict[str, Any], now: float) -> dict[str, Any] | None:
        """A new progress value: the fields to send now, or None when it is held back."""
        if self._last_sent is None or now - self._last_sent >= self.interval:
            self._pending = None
            self._last_sent = now
            return fields
        self._pending = fields  # replaces an older held-back value: only the latest counts
        return None

    def due(self, now: float) -> dict[str, Any] | None:
        """The held-back value once its interval has passed (then it is sent and forgotten)."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return None
        fields, self._pending, self._last_sent = self._pending, None, now
        return fields

    @property
    def deadline(self) -> float | None:
        """When the held-back value is due; None when nothing is held back."""
        if self._pending is None or self._last_sent is None:
            return None
        return self._last_sent + self.interval
