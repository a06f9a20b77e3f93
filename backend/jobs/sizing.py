"""How many jobs each node should hold at once: one running plus a few queued in ComfyUI.

A node's agent says how many it may hold (``NodeState.slots``, 1 + its ``--depth``). While
jobs wait in the backlog, a node idles between two jobs unless its next one is already
queued in ComfyUI when the running one ends, and the queue must not run dry before the
control plane refills it: after a job ends, its event has to reach the studio, a dispatch
pass place the next job and the agent hand it to ComfyUI. If that takes ``lag`` seconds
and the node's short jobs take ``short`` seconds, the node needs ``ceil(lag / short)``
jobs queued behind the running one. Holding more than that only commits jobs to a node
early, which costs the balanced finish that placing by predicted work gives (a job
committed to a node cannot move to one that frees up sooner), so the dispatcher uses as
many of the agent's slots as the measurements ask for, and never more than it offers.

Both are measured in this process, on its own clock: ``lag`` from a job's dispatch to the
arrival of its ``submitted`` event (a round trip through the bus and the agent, so an upper
bound of the one-way refill), a high percentile over recent dispatches; ``short`` from the
run times the node's ``succeeded`` events report, a low percentile over its recent jobs.
Until there are samples a node holds :data:`DEFAULT_SLOTS`, as before sizing existed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from backend.ports.registry import NodeState

#: One running + one queued: what a node holds until its lag and job lengths are measured.
DEFAULT_SLOTS = 2
#: Recent samples kept: dispatch round trips (all nodes), run times (per node).
LAG_SAMPLES = 200
RUN_SAMPLES = 50
#: Dispatches whose ``submitted`` is awaited; older ones are forgotten (a lost job).
MAX_PENDING = 10_000
#: Which percentiles count: the slow end of the lag, the short end of the jobs.
LAG_QUANTILE = 0.9
RUN_QUANTILE = 0.1


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class QueueSizing:
    """Measurements in, each node's slot count out. Safe to call from any thread."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._sent: OrderedDict[str, float] = OrderedDict()  # prompt id -> dispatched at
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self._runs: dict[str, deque[float]] = {}

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

    def ran(self, node_id: str, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._runs.setdefault(node_id, deque(maxlen=RUN_SAMPLES)).append(float(seconds))

    def slots(self, state: NodeState) -> int:
        """How many jobs ``state``'s node should hold: at most what its agent offers."""
        with self._lock:
            runs = self._runs.get(state.node_id)
            if not self._lags or not runs:
                return min(state.slots, DEFAULT_SLOTS)
            lag = _quantile(list(self._lags), LAG_QUANTILE)
            short = _quantile(list(runs), RUN_QUANTILE)
        queued = max(1, math.ceil(lag / short))
        return max(1, min(state.slots, 1 + queued))
