"""How many jobs each node should hold at once: one running plus what must wait in ComfyUI.

A node's agent says how many it may hold (``NodeState.slots``, 1 + its ``--depth``). While
jobs wait in the backlog, a node idles between two jobs unless its next one is already
queued in ComfyUI when the running one ends, and that queue must not run dry before the
control plane refills it: after a job ends, its event has to reach the studio, a dispatch
pass place the next job and the agent hand it to ComfyUI. If that takes ``lag`` seconds,
the jobs queued behind the running one must hold at least ``lag`` seconds of work. So a
node takes one more job while the predicted work of its queued jobs (estimates × the
node's measured speed) is shorter than ``lag``: several short jobs, but one long one is
enough. Holding more only commits jobs to a node early, which costs the balanced finish
that placing by predicted work gives (a job committed to a node cannot move to one that
frees up sooner), so the dispatcher uses as many of the agent's slots as that asks for,
never fewer than one running + one queued, and never more than the agent offers.

``lag`` is measured in this process, on its own clock, in two parts, each a high percentile
over recent samples: the dispatcher's reaction, from a wake-up (a freed slot, a submit) to
the end of the pass that placed jobs for it, and a dispatch's round trip, from a job's
dispatch to the arrival of its ``submitted`` event (through the bus and the agent to
ComfyUI and back, so an upper bound of the one-way hand-over). The node's end event on its
way to the studio is not counted: a few milliseconds beside the rest.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from backend.ports.registry import NodeView

#: One running + one queued: the least a node holds when it may, and all it holds until
#: the lag is measured.
DEFAULT_SLOTS = 2
#: Recent dispatch round trips kept.
LAG_SAMPLES = 200
#: Dispatches whose ``submitted`` is awaited; older ones are forgotten (a lost job).
MAX_PENDING = 10_000
#: The slow end of the lag counts: a refill slower than the queued work idles the GPU, so
#: the queue covers all but the slowest 1 % (0.9 left an idle gap p99 of 49–69 ms in
#: ``python -m bench cluster``, 0.99 one of 25–42 ms).
LAG_QUANTILE = 0.99


class QueueSizing:
    """Measurements in, each node's slot count out. Safe to call from any thread."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: OrderedDict[str, float] = OrderedDict()  # prompt id -> dispatched at
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self._reactions: deque[float] = deque(maxlen=LAG_SAMPLES)

    def dispatched(self, prompt_id: str) -> None:
        with self._lock:
            self._sent[prompt_id] = self._clock()
            while len(self._sent) > MAX_PENDING:
                self._sent.popitem(last=False)

    def submitted(self, prompt_id: str) -> None:
        with self._lock:
            sent = self._sent.pop(prompt_id, None)
            if sent is not None:
                self._lags.append(self._clock() - sent)

    def reacted(self, seconds: float) -> None:
        """A dispatch pass placed jobs ``seconds`` after the wake-up it answered."""
        with self._lock:
            self._reactions.append(seconds)

    def lag(self) -> float | None:
        """The control plane's refill time as measured (None: no dispatch round trip yet)."""
        parts = self.measured()
        return None if parts is None else sum(parts)

    def measured(self) -> tuple[float, float] | None:
        """The lag's two parts: the dispatch round trip and the dispatcher's reaction."""
        with self._lock:
            if not self._lags:
                return None
            return _quantile(self._lags), (_quantile(self._reactions) if self._reactions else 0.0)

    def slots(self, view: NodeView) -> int:
        """How many jobs ``view``'s node should hold now: at most what its agent offers."""
        limit = view.state.slots
        base = min(limit, DEFAULT_SLOTS)
        held = list(view.reservations.values())  # oldest first: the first one runs
        lag = self.lag()
        if len(held) < base or lag is None:
            return base
        queued_seconds = sum(held[1:]) * view.state.speed
        return min(limit, len(held) + 1) if queued_seconds < lag else len(held)


def _quantile(samples: deque[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(LAG_QUANTILE * len(ordered)))]
