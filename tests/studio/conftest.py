"""Fixtures for the studio.

- ``backend``: a backend on the shared ``db`` fixture (in-process bus and registry) for
  the sign-in, file-route and metrics tests through FastAPI's TestClient.
- ``studio_server``: the real entry point, ``python run_studio.py``, started as a
  subprocess on a free port with its data in a temporary directory, its built-in
  simulated ComfyUI node (comfysim) and that node's agent. Nothing of ours is replaced:
  the only stand-in is comfysim for ComfyUI, and tests inject failures and holds through
  the simulator's ``/sim/faults`` endpoint (``--sim-port`` fixes its address).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from backend.blobs import BlobStore
from backend.config import REPO_ROOT, Settings
from backend.db import Database
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.workflows import Library

from ..services import free_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ADMIN_NAME = "admin"
ADMIN_PASSWORD = "operator pass for tests"
START_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def library() -> Library:
    return Library.load(REPO_ROOT / "workflows")


@pytest.fixture
def backend(db: Database, library: Library, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(settings=Settings(data_dir=tmp_path, welcome_credits=100, login_backoff_seconds=600), db=db, bus=MemoryBus(),
                registry=MemoryRegistry(), library=library, blobs=BlobStore(tmp_path / "assets", durable=False))
    yield b
    b.bus.close()


@dataclass
class StudioServer:
    """``run_studio.py`` running in a subprocess."""

    url: str
    sim_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen

    def faults(self, **changes: object) -> None:
        """Switch simulator faults on (``raise_in_node``, ``hang_in_node``, ...)."""
        r = requests.post(self.sim_url + "/sim/faults", json=changes, timeout=5)
        r.raise_for_status()

    def reset_faults(self) -> None:
        requests.delete(self.sim_url + "/sim/faults", timeout=5).raise_for_status()

    def metrics(self) -> str:
        r = requests.get(self.url + "/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    def metric(self, name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", self.metrics(), re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_studio(data_dir: Path, *, log_path: Path, env: dict[str, str] | None = None) -> StudioServer:
    """``run_studio.py`` on free ports; ``env`` adds or overrides settings (``STUDIO_*``).

    Every test browser signs up from 127.0.0.1, so the per-address sign-up limit is
    raised unless ``env`` says otherwise.
    """
    port, sim_port = free_port(), free_port()
    base = dict(os.environ, STUDIO_DATA_DIR=str(data_dir), STUDIO_ADMIN_NAME=ADMIN_NAME,
                STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1",
                HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", STUDIO_SIGNUPS_PER_ADDRESS="10000")
    for name in ("STUDIO_COMFYUI_URLS", "STUDIO_CONFIG", "GRADIO_TEMP_DIR"):
        base.pop(name, None)
    env = {**base, **(env or {})}
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "run_studio.py"), "--port", str(port), "--sim-port", str(sim_port),
             "--log-level", "WARNING"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = StudioServer(url=f"http://127.0.0.1:{port}", sim_url=f"http://127.0.0.1:{sim_port}", data_dir=data_dir,
                          log_path=log_path, process=process)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"run_studio.py exited with {process.returncode}:\n{server.log_tail()}")
        try:
            # Up, and its simulated node has joined (metrics from loopback need no token).
            if server.metric("studio_nodes_online") >= 1:
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_studio(server)
            raise RuntimeError(f"run_studio.py did not come up within {START_TIMEOUT} s:\n{server.log_tail()}")
        time.sleep(0.25)


def stop_studio(server: StudioServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # uvicorn handles SIGTERM; run_studio then stops nodes and worker
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioServer]:
    root = tmp_path_factory.mktemp("run-studio")
    server = start_studio(root / "data", log_path=root / "studio.log")
    try:
        yield server
    finally:
        stop_studio(server)
