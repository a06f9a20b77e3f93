"""The websocket half of ComfyUI's API: one session at a time, kept alive, renewed on loss.

Every connection uses a FRESH clientId. Reusing an id is a trap: when the
old socket's cleanup finally runs, ComfyUI deletes the session entry of that id — which
by then is the new socket — and the new socket silently receives nothing. The price of a
fresh id is that prompts submitted under the old id lose their events; the runner knows
which id each prompt was submitted with and reconciles those through /history instead.

ComfyUI sends no pings, and a socket can go half-open without closing, so the session
pings every ``ping_interval`` and drops the connection when no pong comes back within
``ping_timeout``. A socket that still answers pings but sends no events (a hung server)
is the watchdog's business, not this module's.

Messages are handed to callbacks on this module's thread, in arrival order; callbacks
must be quick (the runner only queues them).
"""

from __future__ import annotations

import json
import math
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import websocket

from .config import AgentConfig

log = logging.getLogger("agent.socket.ComfySocket")

#: How often the reader wakes up to send pings and notice ``stop()``.
_TICK = 0.5


class ComfySocket:
    """A background thread holding the websocket session to one ComfyUI."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        on_open: Callable[[str], None],
        on_message: Callable[[dict[str, Any]], None],
        on_binary: Callable[[bytes], None],
        on_close: Callable[[], None],
    ) -> None:
        self._config = config
        self._on_open = on_open
        self._on_message = on_message
        self._on_binary = on_binary
        self._on_close = on_close
        self._stop = threading.Event()
        self._client_id: str | None = None
        self._down_since: float | None = -math.inf  # never connected: down "forever"
        self._thread = threading.Thread(target=self._run, name=f"agent-{config.node_id}-socket", daemon=True)

    @property
    def client_id(self) -> str | None:
        """The clientId of the open session, None while disconnected."""
        return self._client_id

    def down_for(self) -> float:
        """Seconds since the session was lost (0 while one is open)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = self._config.reconnect_min
        while not self._stop.is_set():
            client_id = f"agent-{self._config.node_id}-{uuid.uuid4().hex[:12]}"
            try:
                # skip_utf8_validation: json.loads validates text anyway, and the pure-Python
                # UTF-8 check was the agent's hottest function under a stream of progress events.
                ws = websocket.create_connection(
                    f"{self._config.ws_url}?clientId={client_id}",
                    timeout=self._config.http_timeout,
                    skip_utf8_validation=True,
                )
            except (websocket.WebSocketException, OSError) as exc:
                log.debug("node_id=%s websocket connect failed (%s); retrying in %.1fs", self._config.node_id, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self._config.reconnect_max)
                continue
            delay = self._config.reconnect_min
            try:
                # Negotiated so previews arrive as type-4 frames that name their prompt.
                ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
                self._client_id, self._down_since = client_id, None
                log.info("node_id=%s websocket open as %s", self._config.node_id, client_id)
                self._on_open(client_id)
                self._read(ws)
            except (websocket.WebSocketException, OSError) as exc:
                log.warning("node_id=%s websocket lost: %s", self._config.node_id, exc)
            finally:
                self._client_id, self._down_since = None, time.monotonic()
                ws.close(timeout=1)
                self._on_close()

    def _read(self, ws: websocket.WebSocket) -> None:
        """Dispatch frames until the socket closes, dies (no pong) or ``stop()``."""
        ws.settimeout(_TICK)
        last_ping = time.monotonic()
        pong_due: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if pong_due is not None and now > pong_due:
                log.warning("node_id=%s websocket: no pong for %.1fs; reconnecting", self._config.node_id, self._config.ping_timeout)
                return
            if pong_due is None and now - last_ping >= self._config.ping_interval:
                ws.ping()
                last_ping, pong_due = now, now + self._config.ping_timeout
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                continue
            if opcode == websocket.ABNF.OPCODE_PONG:
                pong_due = None
            elif opcode == websocket.ABNF.OPCODE_TEXT:
                self._dispatch_text(frame.data)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                self._on_binary(bytes(frame.data))
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                log.info("node_id=%s websocket closed by ComfyUI", self._config.node_id)
                return

    def _dispatch_text(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("node_id=%s websocket: ignoring a text frame that is not JSON", self._config.node_id)
            return
        if isinstance(message, dict) and isinstance(message.get("data"), dict):
            self._on_message(message)
