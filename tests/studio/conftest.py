"""Fixtures for the studio: a backend on the shared ``db`` fixture for page logic, and a
running studio (uvicorn in a thread, a worker, a scripted node) for browser tests.

The running studio is built like ``run_studio.py`` does (``build_backend`` on a data
directory, a :class:`~backend.worker.Worker`, ``create_app``), so swapping in the real
entry point later only changes :func:`running_studio`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.blobs import BlobStore
from backend.config import REPO_ROOT, Settings
from backend.db import Database
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend, build_backend
from backend.workflows import Library
from backend.worker import Worker
from tests.backend.helpers import CHEAP_HASHER

from .scripted_node import ScriptedNode

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def library() -> Library:
    return Library.load(REPO_ROOT / "workflows")


@pytest.fixture
def backend(db: Database, library: Library, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(settings=Settings(data_dir=tmp_path, welcome_credits=100), db=db, bus=MemoryBus(),
                registry=MemoryRegistry(), library=library, blobs=BlobStore(tmp_path / "assets", durable=False))
    yield b
    b.bus.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningStudio:
    url: str
    backend: Backend
    node: ScriptedNode
    worker: Worker


@pytest.fixture(scope="session")
def running_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    import uvicorn

    from studio.app import create_app

    data = tmp_path_factory.mktemp("studio-data")
    backend = build_backend(Settings(data_dir=data, welcome_credits=100))
    worker = Worker(backend, dispatch_interval=0.2).start()
    node = ScriptedNode(backend)
    app = create_app(backend, wake=worker.wake, password_hasher=CHEAP_HASHER)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the studio did not start")
        time.sleep(0.05)
    yield RunningStudio(url=f"http://127.0.0.1:{port}", backend=backend, node=node, worker=worker)
    server.should_exit = True
    thread.join(10)
    node.stop()
    worker.stop()
    backend.close()
