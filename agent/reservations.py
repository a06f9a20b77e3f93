"""This node's reservations in the registry, and when a missing one may be believed.

A reservation missing from the registry normally means the backend released it (it
moved, cancelled or ended the job), and the agent drops or stops the prompt. Missing
reservations are acted on only while the registry is trusted: right after it was found
without this node's capabilities (Redis lost its data) the sweeper first gets
``reservation_grace`` to restore them from the database.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from backend.ports.registry import Registry

from .config import AgentConfig

log = logging.getLogger("agent.reservations.Reservations")


class Reservations:
    """The registry as one node's agent reads it."""

    def __init__(self, config: AgentConfig, registry: Registry, *, stop: threading.Event,
                 on_lost: Callable[[], None]) -> None:
        self._config = config
        self._node = config.node_id
        self._registry = registry
        self._stop = stop
        self._on_lost = on_lost
        #: Until then, missing reservations may be the registry's data loss, not a release.
        self._distrust_until = 0.0

    def held(self) -> set[str]:
        """The prompt ids holding a slot on this node now."""
        return set(self._registry.reservations(self._node))

    def reset(self) -> None:
        """The registry was found without this node's data: do not take missing
        reservations for releases until the sweeper had time to restore them."""
        self._distrust_until = time.monotonic() + self._config.reservation_grace

    def trusted(self) -> bool:
        """Whether a missing reservation means a release. Not while the registry has just
        lost its data (no capabilities of ours): the sweeper restores reservations first."""
        if time.monotonic() < self._distrust_until:
            return False
        if self._registry.capabilities(self._node) is None:
            log.warning("node_id=%s the registry lost this node's data (Redis restarted?); "
                        "waiting for the reservations to be restored", self._node)
            self.reset()
            self._on_lost()
            return False
        return True

    def slot_held(self, prompt_id: str) -> bool | None:
        """Whether ``prompt_id`` holds a slot on this node. While the registry cannot be
        believed a missing slot may be one the sweeper has not restored yet: wait for it,
        or for the registry to be trusted again, holding the delivery (requeueing it would
        spend the queue's delivery limit). None if the agent stops meanwhile."""
        while not self._registry.holds(self._node, prompt_id):
            if self._stop.is_set():
                return None
            if self.trusted():
                return False
            self._stop.wait(self._config.poll_interval)
        return True
