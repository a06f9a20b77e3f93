"""Running simulated nodes: in a background thread (for tests and the studio's demo mode) or
in the foreground (``python -m comfysim``). Many nodes share one asyncio loop and process;
each keeps its own worker thread, like a real ComfyUI."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import SimConfig
from .errors import SimError
from .faults import Faults
from .node import SimNode

log = logging.getLogger("comfysim.runtime")


class SimHandle:
    """A running simulated node. ``url`` is ``http://host:port``."""

    def __init__(self, node: SimNode, host: str, sock: socket.socket, loop: _LoopThread) -> None:
        self.node = node
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._sock = sock
        self._loop = loop
        self._runner: web.AppRunner | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._ready = threading.Event()

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def faults(self) -> Faults:
        return self.node.faults

    def set_faults(self, **changes: Any) -> Faults:
        """Switch faults on/off, e.g. ``set_faults(raise_in_node="KSampler")``."""
        return self.node.set_faults(**changes)

    def reset_faults(self) -> Faults:
        return self.node.reset_faults()

    def close_websockets(self) -> None:
        """The ``close_websockets`` fault action: close every open websocket now."""
        self._loop.run(self.node.hub.close_all())

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the node accepts connections (after ``startup_delay``)."""
        if not self._ready.wait(timeout):
            raise SimError(f"comfysim node {self.url} not ready after {timeout}s")

    async def _serve(self) -> None:
        # The port is bound from the start but only listens after the start-up delay, so
        # early clients get "connection refused" like a ComfyUI that is still loading.
        if self.node.config.startup_delay:
            await asyncio.sleep(self.node.config.startup_delay)
        await self.node.start()
        self._runner = web.AppRunner(self.node.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        self._publisher = asyncio.get_running_loop().create_task(self.node.hub.publish_loop())
        log.info("%s listening on %s", self.node.name, self.url)
        self._ready.set()

    async def _shutdown(self) -> None:
        await self.node.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._publisher is not None:
            self._publisher.cancel()

    def stop(self) -> None:
        """Stop serving, stop the worker and remove a temporary data_dir."""
        if self._loop.alive:
            self._loop.run(self._shutdown())
        self.node.stop()
        self._sock.close()
        if self._loop.owner is self:
            self._loop.close()

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimCluster:
    """Several simulated nodes served from one thread and loop."""

    def __init__(self, handles: list[SimHandle], loop: _LoopThread) -> None:
        self.nodes = handles
        self._loop = loop

    @property
    def urls(self) -> list[str]:
        return [handle.url for handle in self.nodes]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for handle in self.nodes:
            handle.wait_ready(max(deadline - time.monotonic(), 0.0))

    def stop(self) -> None:
        for handle in self.nodes:
            handle.stop()
        self._loop.close()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _LoopThread:
    """An asyncio loop running in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.owner: SimHandle | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if not self.alive:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        self.loop.close()


def _bind(host: str, port: int) -> socket.socket:
    """Reserve the port now (port 0 picks a free one); listening starts once the node is up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SimError(f"cannot bind comfysim to {host}:{port}: {exc}") from None
    return sock


def _node_config(config: SimConfig, index: int, count: int) -> SimConfig:
    if config.data_dir is None or count == 1:
        return config
    return dataclasses.replace(config, data_dir=Path(config.data_dir) / f"node-{index}")


def start_sims(
    count: int, config: SimConfig | None = None, *, host: str = "127.0.0.1", base_port: int = 0, wait: bool = True
) -> SimCluster:
    """Start ``count`` nodes in one background thread; ports ``base_port + i`` (0: free ports).

    With ``wait`` (default) returns once every node listens, unless a start-up delay is
    configured, in which case it returns at once and ``wait_ready()`` blocks.
    """
    if count < 1:
        raise SimError("count must be at least 1")
    config = config or SimConfig()
    loop = _LoopThread("comfysim-loop")
    handles = []
    for index in range(count):
        port = base_port + index if base_port else 0
        node = SimNode(_node_config(config, index, count), name=f"comfysim-{index}" if count > 1 else "comfysim")
        handle = SimHandle(node, host, _bind(host, port), loop)
        loop.submit(handle._serve())
        handles.append(handle)
    cluster = SimCluster(handles, loop)
    if wait and not config.startup_delay:
        cluster.wait_ready()
    return cluster


def start_sim(config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, wait: bool = True) -> SimHandle:
    """Start one node in a background thread. ``port=0`` picks a free port (see ``.port``)."""
    cluster = start_sims(1, config, host=host, base_port=port, wait=wait)
    handle = cluster.nodes[0]
    handle._loop.owner = handle
    return handle
