"""The node's live state in the registry: published on every change and at
least every ``heartbeat_interval``, so the scheduler sees a node go offline within a few
seconds and a quiet node never expires."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from backend.errors import StudioError
from backend.ports.registry import NodeState, Registry

from .config import AgentConfig

log = logging.getLogger("agent.state.StateReporter")

#: Weight of the newest run in the smoothed speed: recent runs matter, one outlier does not.
SPEED_SMOOTHING = 0.3
MIB = 1024 * 1024


def is_simulated(stats: dict[str, Any]) -> bool:
    """Whether ``/system_stats`` comes from comfysim, whose devices are named after it."""
    return any("comfysim" in str(device.get("name", "")) for device in stats.get("devices", []))


class StateReporter:
    """Holds the fields of :class:`NodeState` that change and publishes them."""

    def __init__(self, config: AgentConfig, registry: Registry) -> None:
        self._config = config
        self._registry = registry
        self._lock = threading.Lock()
        self._state = NodeState(node_id=config.node_id, online=False, slots=config.slots, label=config.label,
                                 following=())

    @property
    def current(self) -> NodeState:
        with self._lock:
            return self._state

    def update(self, **changes: Any) -> bool:
        """Change fields; publish at once if anything differs (and say so)."""
        with self._lock:
            new = dataclasses.replace(self._state, **changes)
            if new == self._state:
                return False
            self._state = new
        self.publish()
        return True

    def system_stats(self, stats: dict[str, Any]) -> bool:
        devices = stats.get("devices") or [{}]
        return self.update(
            vram_total_mb=round(float(devices[0].get("vram_total", 0)) / MIB, 1),
            vram_free_mb=round(float(devices[0].get("vram_free", 0)) / MIB, 1),
            simulated=is_simulated(stats),
        )

    def record_run(self, seconds: float, estimate_seconds: float) -> None:
        """Fold one measured run into ``speed`` (measured / estimated, smoothed)."""
        if seconds <= 0 or estimate_seconds <= 0:
            return
        with self._lock:
            old = self._state.speed
        self.update(speed=round((1 - SPEED_SMOOTHING) * old + SPEED_SMOOTHING * (seconds / estimate_seconds), 4))

    def publish(self) -> None:
        with self._lock:
            state = dataclasses.replace(self._state, updated_at=time.time())
        try:
            self._registry.heartbeat(state, ttl=self._config.state_ttl)
        except StudioError as exc:
            # The next heartbeat retries; until then the old state stands or expires.
            log.warning("node_id=%s cannot publish the node state: %s", self._config.node_id, exc)

    def remove(self) -> None:
        try:
            self._registry.remove(self._config.node_id)
        except StudioError as exc:
            log.warning("node_id=%s cannot remove the node state: %s", self._config.node_id, exc)
