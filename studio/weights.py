"""How much of a job each graph node is: the weights behind the progress bar.

Counting every node as an equal share put a 25-step sampler at 63–74 % and let "Saving"
push the bar to 88 %. Instead each node that will run gets a weight:

- **measured**: the seconds each node took in this workflow's recent successful runs
  (learned from the stage events' timestamps, smoothed), once there are any;
- **by kind** until then: samplers (the nodes that report steps) share 80 % of the bar,
  decoders, encoders and model upscalers count three times a loader, the rest half.

The bar then moves as ``done weights + running weight x step fraction``. A node that
starts implies its inputs are done, so nodes ComfyUI served from its cache (which send
no stage event) are counted as done, not left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from backend.workflows import WorkflowSpec

SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
HEAVY = frozenset({"VAEDecode", "VAEEncode", "VAEDecodeTiled", "VAEEncodeForInpaint", "VAEDecodeAudio",
                   "ImageUpscaleWithModel", "CreateVideo", "SaveVideo", "SaveAnimatedWEBP"})
SAMPLER_SHARE = 0.8
#: Weight of the newest run in the learned seconds per node.
SMOOTHING = 0.3
#: A node never seen running (served from cache last time) still counts a little.
UNSEEN_SHARE = 0.02


def _inputs_of(graph: Mapping[str, Any], node: str) -> list[str]:
    links = graph.get(node, {}).get("inputs", {}).values()
    return [str(v[0]) for v in links if isinstance(v, list) and len(v) == 2 and str(v[0]) in graph]


def upstream(graph: Mapping[str, Any], nodes: Iterable[str]) -> set[str]:
    """``nodes`` and every node they read from."""
    seen: set[str] = set()
    pending = [n for n in nodes if n in graph]
    while pending:
        node = pending.pop()
        if node not in seen:
            seen.add(node)
            pending.extend(_inputs_of(graph, node))
    return seen


def nodes_to_run(spec: WorkflowSpec) -> set[str]:
    """The result nodes and everything upstream of them (ComfyUI runs nothing else)."""
    return upstream(spec.graph, [o.graph_node for o in spec.outputs]) or set(spec.graph)


def by_kind(spec: WorkflowSpec) -> dict[str, float]:
    """Weights from the node classes alone (before any run was measured); they sum to 1."""
    nodes = nodes_to_run(spec)
    kinds = {n: str(spec.graph[n].get("class_type", "")) for n in nodes}
    samplers = [n for n, kind in kinds.items() if kind in SAMPLERS]
    raw = {n: 3.0 if kind in HEAVY else 1.0 if "Loader" in kind else 0.5
           for n, kind in kinds.items() if n not in samplers}
    rest = sum(raw.values()) or 1.0
    if not samplers:
        return {n: w / rest for n, w in raw.items()}
    weights = {n: SAMPLER_SHARE / len(samplers) for n in samplers}
    weights.update({n: (1 - SAMPLER_SHARE) * w / rest for n, w in raw.items()})
    return weights


def fraction(spec: WorkflowSpec, weights: Mapping[str, float], started: list[str], step: float) -> float:
    """The share of the job done when ``started`` nodes ran in that order and the last of
    them is ``step`` (0..1) through its own work."""
    if not started:
        return 0.0
    total = sum(weights.values()) or 1.0
    current = started[-1]
    done = upstream(spec.graph, started) - {current}
    value = sum(weights.get(n, 0.0) for n in done) + weights.get(current, 0.0) * min(max(step, 0.0), 1.0)
    return max(0.0, min(value / total, 1.0))


class StageTimes:
    """Seconds per node of each workflow, learned from finished runs (per process)."""

    def __init__(self) -> None:
        self._seconds: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def observe(self, workflow: str, starts: list[tuple[str, float]], finished: float) -> None:
        """Fold one successful run in: node ``i`` ran from its start to the next one's."""
        if not starts:
            return
        ends = [ts for _, ts in starts[1:]] + [finished]
        with self._lock:
            learned = self._seconds.setdefault(workflow, {})
            for (node, began), ended in zip(starts, ends):
                seconds = max(0.0, ended - began)
                old = learned.get(node)
                learned[node] = seconds if old is None else (1 - SMOOTHING) * old + SMOOTHING * seconds
            for node in set(learned) - {n for n, _ in starts}:
                learned[node] *= 1 - SMOOTHING  # served from cache this time

    def weights(self, spec: WorkflowSpec) -> dict[str, float]:
        with self._lock:
            learned = dict(self._seconds.get(spec.name, {}))
        total = sum(learned.values())
        if total <= 0:
            return by_kind(spec)
        return {n: learned.get(n, UNSEEN_SHARE * total) for n in nodes_to_run(spec)}
