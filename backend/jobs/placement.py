"""Which live nodes can run a job, and what each would cost in extra time.

A node is capable when its ``/object_info`` has every node class and model file the job
needs and its memory is large enough for the job's predicted peak. Capabilities are
hundreds of class names per node, so they are cached by the node's ``caps_version`` and
re-read only when the agent reports a change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from backend.ports.registry import Candidate, Capabilities, NodeView, Registry
from backend.workflows import WorkflowSpec

#: Seconds a node is assumed to need to switch checkpoints, so a node that has the job's
#: checkpoint loaded wins unless the other is clearly less busy.
DEFAULT_SWITCH_PENALTY = 5.0


@dataclass(frozen=True)
class Needs:
    """What one job requires of a node."""

    classes: frozenset[str]
    models: frozenset[str]  # "folder/file"
    memory_mb: float
    checkpoint: str | None

    @classmethod
    def of(cls, spec: WorkflowSpec, params: dict, memory_mb: float) -> "Needs":  # type: ignore[type-arg]
        models = spec.required_models(params)
        checkpoints = sorted(m.file for m in models if m.folder == "checkpoints")
        return cls(
            classes=spec.node_classes,
            models=frozenset(f"{m.folder}/{m.file}" for m in models),
            memory_mb=memory_mb,
            checkpoint=checkpoints[0] if checkpoints else None,
        )


class CapabilityCache:
    """Capabilities per node, re-read from the registry when ``caps_version`` changes."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._cache: dict[str, tuple[str, Capabilities]] = {}

    def get(self, view: NodeView) -> Capabilities:
        node, version = view.state.node_id, view.state.caps_version
        cached = self._cache.get(node)
        if cached is None or cached[0] != version:
            caps = self._registry.capabilities(node) or Capabilities()
            self._cache[node] = cached = (version, caps)
        return cached[1]


def capable(view: NodeView, caps: Capabilities, needs: Needs) -> bool:
    state = view.state
    if not state.online or caps.missing(needs.classes, needs.models):
        return False
    # A node that does not report its memory (0) is not refused on memory grounds.
    return state.vram_total_mb <= 0 or needs.memory_mb <= state.vram_total_mb


def candidates(views: Iterable[NodeView], caps: CapabilityCache, needs: Needs, *, switch_penalty: float) -> list[Candidate]:
    result = []
    for view in views:
        if capable(view, caps.get(view), needs):
            loaded = view.state.loaded_checkpoint
            penalty = switch_penalty if needs.checkpoint and loaded != needs.checkpoint else 0.0
            result.append(Candidate(view.state.node_id, penalty))
    return result
