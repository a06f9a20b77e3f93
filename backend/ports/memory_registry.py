"""The in-process node registry, for the embedded studio and tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from .registry import DEFAULT_ENDED_SECONDS, DEFAULT_TTL_SECONDS, Candidate, Capabilities, NodeState, NodeView, Registry, choice_key


class MemoryRegistry(Registry):
    """One lock around dicts; expiry is checked against ``clock`` when reading."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, tuple[NodeState, float]] = {}  # node -> (state, expires at)
        self._caps: dict[str, Capabilities] = {}
        self._reservations: dict[str, dict[str, float]] = {}
        self._ended: dict[tuple[str, str], float] = {}  # (node, prompt id) -> not restorable until
        self._epoch = uuid.uuid4().hex

    def epoch(self) -> str:
        with self._lock:
            return self._epoch

    def heartbeat(self, state: NodeState, *, ttl: float = DEFAULT_TTL_SECONDS) -> None:
        with self._lock:
            self._states[state.node_id] = (state, self._clock() + ttl)

    def remove(self, node_id: str) -> None:
        with self._lock:
            self._states.pop(node_id, None)

    def set_capabilities(self, node_id: str, caps: Capabilities) -> None:
        with self._lock:
            self._caps[node_id] = caps

    def capabilities(self, node_id: str) -> Capabilities | None:
        with self._lock:
            return self._caps.get(node_id)

    def _live(self) -> dict[str, NodeState]:
        now = self._clock()
        return {node: state for node, (state, expires) in self._states.items() if expires > now}

    def nodes(self) -> list[NodeView]:
        with self._lock:
            return [
                NodeView(state=state, reservations=dict(self._reservations.get(node, {})))
                for node, state in sorted(self._live().items())
            ]

    def reserve(self, candidates: Sequence[Candidate], prompt_id: str, estimate_seconds: float) -> str | None:
        with self._lock:
            live = self._live()
            best: tuple[tuple[bool, float, str], str] | None = None
            for candidate in candidates:
                state = live.get(candidate.node_id)
                if state is None or not state.online:
                    continue
                held = self._reservations.get(candidate.node_id, {})
                if prompt_id in held:
                    return None
                view = NodeView(state=state, reservations=held)
                if view.free_slots == 0:
                    continue
                key = choice_key(view, candidate)
                if best is None or key < best[0]:
                    best = (key, candidate.node_id)
            if best is None:
                return None
            # float(): reservations() promises floats even when a caller passes an int.
            self._reservations.setdefault(best[1], {})[prompt_id] = float(estimate_seconds)
            return best[1]

    def release(self, node_id: str, prompt_id: str) -> bool:
        with self._lock:
            return self._reservations.get(node_id, {}).pop(prompt_id, None) is not None

    def end(self, node_id: str, prompt_id: str, *, remember: float = DEFAULT_ENDED_SECONDS) -> bool:
        with self._lock:
            now = self._clock()
            self._ended = {key: until for key, until in self._ended.items() if until > now}
            self._ended[(node_id, prompt_id)] = now + remember
            return self._reservations.get(node_id, {}).pop(prompt_id, None) is not None

    def reservations(self, node_id: str) -> dict[str, float]:
        with self._lock:
            return dict(self._reservations.get(node_id, {}))

    def restore(self, node_id: str, reservations: Mapping[str, float]) -> int:
        with self._lock:
            now = self._clock()
            back = {prompt_id: float(seconds) for prompt_id, seconds in reservations.items()
                    if self._ended.get((node_id, prompt_id), now) <= now}
            self._reservations.setdefault(node_id, {}).update(back)
            return len(back)

    def reserved_nodes(self) -> list[str]:
        with self._lock:
            return sorted(node for node, held in self._reservations.items() if held)

    def clear(self) -> None:
        """Lose everything, as a Redis restart without persistence would (for tests)."""
        with self._lock:
            self._states.clear()
            self._caps.clear()
            self._reservations.clear()
            self._ended.clear()
            self._epoch = uuid.uuid4().hex
