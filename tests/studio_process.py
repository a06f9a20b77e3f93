"""``python run_studio.py`` as a subprocess, in embedded mode (SQLite, the in-process bus
and registry, simulated nodes with their agents as threads), on free ports with its data
in a given folder. The studio tests and the studio-sessions benchmark both start it here
(the benchmarks import from ``tests``, never the other way).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from backend.config import REPO_ROOT

from .services import free_port

ADMIN_NAME = "admin"
ADMIN_PASSWORD = "operator pass for tests"
START_TIMEOUT = 90.0
#: Settings of the caller's environment that would take the studio out of embedded mode.
_NOT_EMBEDDED = ("STUDIO_COMFYUI_URLS", "STUDIO_CONFIG", "STUDIO_DATABASE_URL", "STUDIO_REDIS_URL", "STUDIO_AMQP_URL",
                 "GRADIO_TEMP_DIR")


@dataclass
class StudioServer:
    """``run_studio.py`` running in a subprocess."""

    url: str
    #: The simulated nodes, one URL each (the first on ``--sim-port``, then the next ports).
    sim_urls: list[str]
    data_dir: Path
    log_path: Path
    process: subprocess.Popen  # type: ignore[type-arg]

    @property
    def sim_url(self) -> str:
        return self.sim_urls[0]

    def faults(self, **changes: object) -> None:
        """Switch simulator faults on in every node (``raise_in_node``, ``hang_in_node``, ...)."""
        for url in self.sim_urls:
            requests.post(url + "/sim/faults", json=changes, timeout=5).raise_for_status()

    def reset_faults(self) -> None:
        for url in self.sim_urls:
            requests.delete(url + "/sim/faults", timeout=5).raise_for_status()

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


def start_studio(data_dir: Path, *, log_path: Path, env: dict[str, str] | None = None, nodes: int = 1,
                 timeout: float = START_TIMEOUT) -> StudioServer:
    """``run_studio.py`` with ``nodes`` simulated nodes, once they are all online; ``env``
    adds or overrides settings (``STUDIO_*``).

    Every test browser signs up from 127.0.0.1, so the per-address sign-up limit is
    raised unless ``env`` says otherwise.
    """
    port, sim_port = free_port(), free_port()  # comfysim takes sim_port, sim_port + 1, ...
    base = dict(os.environ, STUDIO_DATA_DIR=str(data_dir), STUDIO_ADMIN_NAME=ADMIN_NAME,
                STUDIO_ADMIN_PASSWORD=ADMIN_PASSWORD, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1",
                HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", STUDIO_SIGNUPS_PER_ADDRESS="10000")
    for name in _NOT_EMBEDDED:
        base.pop(name, None)
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "run_studio.py"), "--port", str(port), "--sim-port", str(sim_port),
             "--simulated-nodes", str(nodes), "--log-level", "WARNING"],
            cwd=REPO_ROOT, env={**base, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
        )
    server = StudioServer(url=f"http://127.0.0.1:{port}", sim_urls=[f"http://127.0.0.1:{sim_port + i}" for i in range(nodes)],
                          data_dir=data_dir, log_path=log_path, process=process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"run_studio.py exited with {process.returncode}:\n{server.log_tail()}")
        try:
            # Up, and its simulated nodes have joined (metrics from loopback need no token).
            if server.metric("studio_nodes_online") >= nodes:
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_studio(server)
            raise RuntimeError(f"run_studio.py did not come up within {timeout} s:\n{server.log_tail()}")
        time.sleep(0.25)


def stop_studio(server: StudioServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # uvicorn handles SIGTERM; run_studio then stops nodes and worker
        try:
            server.process.wait(30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
