"""The agent's settings: one frozen dataclass built at the entry point and passed down."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from backend.ports.registry import DEFAULT_TTL_SECONDS

from .errors import AgentError


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent needs to know about its ComfyUI and its timing.

    The defaults are the operator-facing defaults; tests shorten the timeouts.
    """

    node_id: str
    #: Base URL of the one ComfyUI this agent owns, e.g. ``http://127.0.0.1:8188``. It is
    #: never published anywhere (browsers must not learn it); ``label`` is shown instead.
    comfy_url: str
    #: Where outputs and previews are stored (the studio's asset store, maybe a shared mount).
    assets_dir: Path = Path("data/assets")
    #: Where the agent journals the jobs it has on ComfyUI (``<state_dir>/<node_id>/``), so
    #: an agent restarted after a crash adopts them. None: ``agent-state`` beside ``assets_dir``.
    #: Local to the host; never shared between agents of different nodes' ids.
    state_dir: Path | None = None
    #: The most prompts waiting in ComfyUI's queue behind the running one; slots = 1 + depth
    #: (the dispatcher fills as many as the measured refill time asks for).
    depth: int = 1
    #: Operator-facing name of the node; default: this host's name.
    label: str = field(default_factory=socket.gethostname)
    #: Seconds between two state publications (also published on every change).
    heartbeat_interval: float = 2.0
    #: How long the registry keeps the state after the last heartbeat.
    state_ttl: float = DEFAULT_TTL_SECONDS
    #: A running job with no event for this long is reconciled with /queue and /history.
    silence_timeout: float = 10.0
    #: Seconds between two checks of the reservations of active jobs (cancellation).
    poll_interval: float = 1.0
    #: Shortest spacing of two progress events of one job (ComfyUI sends one per sampler
    #: step); stage changes, previews, outputs and the end are never held back. 0: every step.
    progress_interval: float = 0.1
    #: After the registry was found without this node's capabilities (Redis restarted with
    #: its data gone, or a first start) missing reservations are not trusted for this long,
    #: so the sweeper can restore them from the database before a job is taken for cancelled.
    #: None: five heartbeat intervals.
    registry_grace: float | None = None
    #: Reconnect back-off: first delay, doubled per failure up to the maximum.
    reconnect_min: float = 0.5
    reconnect_max: float = 5.0
    #: Websocket keep-alive: a ping this often; no pong within ``ping_timeout`` = dead socket.
    ping_interval: float = 5.0
    ping_timeout: float = 5.0
    #: Timeout of one HTTP request to ComfyUI (downloads: per read, not in total).
    http_timeout: float = 10.0
    #: Timeout of the health check; short, so a hung ComfyUI is offline within seconds.
    health_timeout: float = 3.0
    #: Store sampler preview frames and tell the user (needs ComfyUI's --preview-method).
    previews: bool = True
    #: Largest output or preview file accepted from ComfyUI.
    max_output_bytes: int = 1024 * 1024 * 1024
    #: Pixel cap when measuring output images (Pillow's own cap applies below it anyway).
    max_output_pixels: int = 256_000_000

    def __post_init__(self) -> None:
        if not self.node_id or "/" in self.node_id or any(c.isspace() for c in self.node_id):
            raise AgentError(f"node_id must be a non-empty word without '/' or spaces, not {self.node_id!r}")
        url = urlsplit(self.comfy_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise AgentError(f"comfy_url must look like http://127.0.0.1:8188, not {self.comfy_url!r}")
        if self.depth < 0:
            raise AgentError("depth must be 0 or more")
        for name in ("heartbeat_interval", "silence_timeout", "poll_interval", "reconnect_min", "ping_interval", "health_timeout"):
            if getattr(self, name) <= 0:
                raise AgentError(f"{name} must be positive")
        if self.state_ttl <= self.heartbeat_interval:
            raise AgentError("state_ttl must be longer than heartbeat_interval, or the node flickers offline")
        if self.progress_interval < 0:
            raise AgentError("progress_interval must not be negative")
        if self.registry_grace is not None and self.registry_grace < 0:
            raise AgentError("registry_grace must not be negative")
        if self.reconnect_max < self.reconnect_min:
            raise AgentError("reconnect_max must be at least reconnect_min")

    @property
    def journal_dir(self) -> Path:
        """This node's job journal: one file per job the agent has on ComfyUI."""
        base = self.state_dir if self.state_dir is not None else Path(self.assets_dir).parent / "agent-state"
        return Path(base) / self.node_id

    @property
    def reservation_grace(self) -> float:
        return self.registry_grace if self.registry_grace is not None else 5 * self.heartbeat_interval

    @property
    def slots(self) -> int:
        """Jobs this node holds at once: one running plus ``depth`` queued in ComfyUI."""
        return 1 + self.depth

    @property
    def ws_url(self) -> str:
        return "ws" + self.comfy_url.rstrip("/")[4:] + "/ws"
