"""One agent: the supervisor that wires the parts for one ComfyUI host and keeps the
node's presence honest.

The supervisor thread checks ComfyUI's health every ``heartbeat_interval`` (and at once
when the websocket opens or closes). The node is **online** only while ``/system_stats``
answers and a websocket session is open; only then does the agent consume its job queue.
A websocket that is only reconnecting (shorter than a heartbeat interval) does not count
as down, so a dropped session does not make the node flicker. Offline, it stops consuming (unstarted jobs wait in the queue or go elsewhere) and keeps
publishing ``online=False``; back online, it re-reads the capabilities, forgets which
inputs the node had, reconciles its jobs and consumes again.

Embedded use (the studio runs agents as threads)::

    agent = Agent(AgentConfig(node_id="sim-1", comfy_url=url), bus=bus, registry=registry, blobs=blobs)
    agent.start()
    ...
    agent.stop()
"""

from __future__ import annotations

import logging
import threading

from backend.ports.blob_store import BlobStore
from backend.errors import StudioError
from backend.ports.bus import Bus, Subscription
from backend.ports.registry import Registry

from .capabilities import caps_version, read_capabilities
from .comfy import ComfyClient
from .config import AgentConfig
from .errors import ComfyUnavailable
from .outputs import OutputStore
from .runner import JobRunner
from .socket import ComfySocket
from .state import StateReporter
from .uploads import Uploader

log = logging.getLogger("agent.agent.Agent")


class Agent:
    """The agent of one ComfyUI host. ``start()`` returns at once; everything runs on
    daemon threads until ``stop()``."""

    def __init__(self, config: AgentConfig, *, bus: Bus, registry: Registry, blobs: BlobStore) -> None:
        self.config = config
        self._bus = bus
        self._registry = registry
        self.client = ComfyClient(config.comfy_url, timeout=config.http_timeout)
        self.state = StateReporter(config, registry)
        self.uploader = Uploader(self.client, blobs, node_id=config.node_id)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._subscription: Subscription | None = None
        # Capabilities are re-read once per websocket session: a counter, not a flag, so a
        # read that started before a reconnect does not count for the new session.
        self._sessions = 0
        self._caps_session = -1
        self.runner = JobRunner(
            config,
            client=self.client,
            bus=bus,
            registry=registry,
            uploader=self.uploader,
            outputs=OutputStore(self.client, blobs, config),
            state=self.state,
            session=lambda: self.socket.client_id,
            on_unreachable=self._wake.set,
            on_registry_lost=self._wake.set,
        )
        self.socket = ComfySocket(
            config,
            on_open=self._on_open,
            on_message=self.runner.on_message,
            on_binary=self.runner.on_binary,
            on_close=self._wake.set,
        )
        self._thread = threading.Thread(target=self._supervise, name=f"agent-{config.node_id}", daemon=True)

    @property
    def online(self) -> bool:
        return self.state.current.online

    def start(self) -> None:
        log.info("node_id=%s agent starting (label %s, %d slots)", self.config.node_id, self.config.label, self.config.slots)
        self.runner.start()
        self.socket.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop consuming, close the session and take the node out of the registry."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._consume(False)
        self.socket.stop()
        self.runner.stop()
        self.state.remove()
        self.client.close()
        log.info("node_id=%s agent stopped", self.config.node_id)

    def _on_open(self, client_id: str) -> None:
        # A new session may mean a restarted ComfyUI: other files, other models, no queue.
        self.uploader.forget()
        self._sessions += 1
        self.runner.on_session(client_id)
        self._wake.set()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._check()
            except Exception:  # noqa: BLE001 - the supervisor must keep the heartbeat going
                log.exception("node_id=%s supervisor: unexpected error", self.config.node_id)
            self._wake.wait(self.config.heartbeat_interval)

    def _check(self) -> None:
        """One health check: publish the state, start or stop consuming on a change."""
        healthy = False
        changed = False
        try:
            stats = self.client.system_stats(timeout=self.config.health_timeout)
            if self.socket.down_for() < self.config.heartbeat_interval:
                self._ensure_capabilities()
                changed |= self.state.system_stats(stats)
                healthy = True
        except ComfyUnavailable as exc:
            if self.online:
                log.warning("node_id=%s ComfyUI unreachable: %s", self.config.node_id, exc)
        if healthy != self.online:
            log.log(logging.INFO if healthy else logging.WARNING, "node_id=%s node is now %s", self.config.node_id,
                    "online" if healthy else "offline")
            if not healthy:
                self._consume(False)  # before publishing, so no job arrives for a dead node
        changed |= self.state.update(online=healthy)
        if healthy:
            self._consume(True)
        if not changed:
            self.state.publish()  # the heartbeat

    def _ensure_capabilities(self) -> None:
        """Publish the capabilities after each new session, and whenever the registry has
        none for this node (Redis restarted without its data: a scheduler would otherwise
        see a node able to run nothing). One small read per heartbeat."""
        try:
            lost = self._registry.capabilities(self.config.node_id) is None
        except StudioError as exc:
            log.warning("node_id=%s cannot read the capabilities back (%s)", self.config.node_id, exc)
            return
        if lost:
            if self._caps_session != -1:
                log.warning("node_id=%s the registry lost this node's capabilities; publishing them again", self.config.node_id)
            # Reservations may be gone too: do not take them for cancellations until the
            # sweeper had time to restore them from the database.
            self.runner.registry_reset()
            # The node's state first: a node without capabilities that is also missing from
            # the registry tells the sweeper "the registry lost its data, wait for the
            # agents"; one with capabilities but no state would look like a dead agent.
            self.state.publish()
        if lost or self._caps_session != self._sessions:
            self._refresh_capabilities()

    def _refresh_capabilities(self) -> None:
        session = self._sessions
        caps = read_capabilities(self.client)
        try:
            self._registry.set_capabilities(self.config.node_id, caps)
        except StudioError as exc:
            log.warning("node_id=%s cannot publish capabilities (%s); retrying", self.config.node_id, exc)
            return
        self._caps_session = session
        self.state.update(caps_version=caps_version(caps))
        log.info(
            "node_id=%s capabilities: %d node classes, %d model files", self.config.node_id, len(caps.classes), len(caps.models)
        )

    def _consume(self, on: bool) -> None:
        if on and self._subscription is None and not self._stop.is_set():
            try:
                self._subscription = self._bus.consume_jobs(
                    self.config.node_id, self.runner.handle_delivery, prefetch=self.config.slots
                )
            except StudioError as exc:
                log.warning("node_id=%s cannot consume jobs yet: %s", self.config.node_id, exc)
        elif not on and self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            subscription.close()
