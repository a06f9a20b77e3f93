"""The /ws endpoint and message fan-out, with ComfyUI's session semantics (server.py).

Sessions are a dict keyed by clientId. A new socket with a known clientId replaces the entry;
the old socket stays open but silent. When a socket closes, its cleanup pops the entry for its
clientId even if that entry is now a newer socket: the "stale socket" pitfall of the real
server, reproduced so agents are tested against it.

Messages from the worker thread go through one asyncio queue, so they reach each socket in
the order they were produced, as with ComfyUI's send_sync/publish_loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .faults import Faults

log = logging.getLogger("comfysim.websocket.SocketHub")

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}


class SocketHub:
    def __init__(self, faults: Callable[[], Faults], server_features: Callable[[], dict[str, Any]]) -> None:
        self._faults = faults
        self._server_features = server_features
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        # The client of the running prompt and the node it is on: a reconnecting owner is
        # told the current node, like ComfyUI's server.client_id / last_node_id.
        self.owner: str | None = None
        self.last_node_id: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, Any, str | None]] | None = None
        self._all: set[web.WebSocketResponse] = set()
        self.queue_info: Callable[[], dict[str, Any]] = lambda: {"exec_info": {"queue_remaining": 0}}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()

    # ---- sending (thread-safe) ------------------------------------------------------------

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a JSON message for one client, or for every socket when ``sid`` is None."""
        self._enqueue(("json", {"type": event, "data": data}, sid))

    def send_preview(self, image: bytes, fmt: str, metadata: dict[str, Any] | None, sid: str | None) -> None:
        """Queue a binary preview: type 4 with ``metadata``, else legacy type 1."""
        if metadata is not None:
            header = json.dumps(metadata).encode()
            frame = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(header)) + header + image
        else:
            frame = struct.pack(">II", PREVIEW_IMAGE, _IMAGE_FORMATS[fmt]) + image
        self._enqueue(("bytes", frame, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        if sid is None:
            return False
        flags = self.metadata.get(sid, {}).get("feature_flags", {})
        return bool(flags.get("supports_preview_metadata"))

    def status(self) -> None:
        self.send("status", {"status": self.queue_info()})

    def _enqueue(self, message: tuple[str, Any, str | None]) -> None:
        if self._loop is None or self._queue is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

    async def publish_loop(self) -> None:
        assert self._queue is not None
        while True:
            kind, payload, sid = await self._queue.get()
            targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
            for ws in targets:
                await self._write(ws, kind, payload)

    async def _write(self, ws: web.WebSocketResponse, kind: str, payload: Any) -> None:
        if self._faults().ws_silent:
            return
        try:
            if kind == "json":
                await ws.send_str(json.dumps(payload))
            else:
                await ws.send_bytes(payload)
        except (ConnectionError, RuntimeError) as exc:
            # A socket closing under us is normal; ComfyUI ignores it the same way.
            log.debug("dropping message to a closing socket: %s", exc)

    # ---- connections ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.metadata[sid] = {"feature_flags": {}}
        self._all.add(ws)
        try:
            await self._write(ws, "json", {"type": "status", "data": {"status": self.queue_info(), "sid": sid}})
            if self.owner == sid and self.last_node_id is not None:
                await self._write(ws, "json", {"type": "executing", "data": {"node": self.last_node_id}})
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    log.warning("invalid JSON from websocket %s", sid)
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    self.metadata.setdefault(sid, {})["feature_flags"] = data.get("data", {})
                    await self._write(ws, "json", {"type": "feature_flags", "data": self._server_features()})
                first = False
        finally:
            # Deliberately by clientId, not by socket: see the module docstring.
            self.sockets.pop(sid, None)
            self.metadata.pop(sid, None)
            self._all.discard(ws)
        return ws

    async def close_all(self) -> None:
        """Close every open socket (the ``close_websockets`` fault, and shutdown)."""
        for ws in list(self._all):
            await ws.close()
