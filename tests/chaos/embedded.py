"""The embedded studio under chaos: ``python run_studio.py`` as a process (SQLite, the
in-process bus and registry, its agents as threads) in front of comfysim processes that
outlive it, so a SIGKILL of the studio leaves its ComfyUIs running their prompts.

Everything in-process dies with the studio: the registry's reservations, the bus's job
messages and agent events not yet applied. What must bring it back is the database (the
truth), the agents' journals on disk, and ComfyUI's own queue and history.

The load is submitted from the test process into the same SQLite database with the real
``submit``; its only stand-in is the node list that ``submit`` checks capabilities
against (the studio's registry lives inside the studio), built from the same comfysim
nodes' ``/object_info``. The studio's dispatcher takes the jobs from the backlog.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from agent.capabilities import read_capabilities
from agent.comfy import ComfyClient
from backend import assets
from backend.blobs import BlobStore
from backend.config import REPO_ROOT, Settings
from backend.db import Database, migrate
from backend.db.models import Job, User
from backend.jobs.state import ACTIVE as ACTIVE_STATES
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.ports.registry import NodeState
from backend.runtime import Backend
from backend.jobs.submit import SubmitResult, submit
from backend.workflows import Library

from ..backend.helpers import make_user
from ..e2e.stack import png_bytes, wait_for
from ..private_servers import free_port
from .cluster import SimProcess, _Process

#: Seconds for the studio to answer after a start (Gradio's imports on a busy machine).
STUDIO_START_TIMEOUT = 120.0


class StudioProcess(_Process):
    """``python run_studio.py`` in embedded mode for the given ComfyUI URLs."""

    def __init__(self, data_dir: Path, comfy_urls: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        env.update(STUDIO_DATA_DIR=str(data_dir), STUDIO_COMFYUI_URLS=",".join(comfy_urls), STUDIO_ADMIN_PASSWORD="Chaos-Lantern-1937-quartz",
                   GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        args = [sys.executable, str(REPO_ROOT / "run_studio.py"), "--port", str(self.port), "--log-level", "INFO"]
        super().__init__("studio", args, data_dir.parent / "studio.log", env)

    def metrics(self) -> str:
        return requests.get(f"{self.url}/metrics", timeout=5).text

    def wait_up(self, nodes: int) -> None:
        """Until it answers and all its nodes are online again."""
        def up() -> bool:
            assert self.alive, f"the studio exited:\n{self.tail()}"
            try:
                return _gauge(self.metrics(), "studio_nodes_online") >= nodes
            except requests.RequestException:
                return False

        wait_for(up, STUDIO_START_TIMEOUT, "the studio up with its nodes online", interval=0.25)


def _labels(node: str) -> str:
    return '{node="%s",simulated="true"}' % node


def _gauge(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@dataclass
class EmbeddedCluster:
    """The studio process, its comfysim nodes, and the test's view of its database."""

    studio: StudioProcess
    sims: dict[str, SimProcess]
    db: Database
    data_dir: Path
    submitter: Backend
    users: list[User] = field(default_factory=list)
    images: dict[int, str] = field(default_factory=dict)

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    def submit_job(self, user: User, workflow: str, params: dict[str, Any]) -> SubmitResult:
        return submit(self.submitter, user.id, workflow, params, idempotency_key=uuid.uuid4().hex, expert=True,
                      queue_if_busy=True)

    def active_jobs(self) -> list[str]:
        with self.db.read() as s:
            return list(s.scalars(select(Job.id).where(Job.state.in_(ACTIVE_STATES))))

    # -- checks.Observed --
    def tallies(self) -> list[Path]:
        return [sim.tally for sim in self.sims.values()]

    def reservations(self) -> tuple[set[str], set[str]]:
        """The studio's registry is inside it: compared as slots held per node (/metrics)
        against the jobs the database has on each node."""
        text = self.studio.metrics()
        held = {f"{node}:{int(_gauge(text, 'studio_node_reserved_slots', _labels(node)))}" for node in self.sims}
        per_node = collections.Counter(self._active_nodes())
        active = {f"{node}:{per_node.get(node, 0)}" for node in self.sims}
        return held, active

    def _active_nodes(self) -> list[str]:
        """The node of every job holding one, once per job."""
        with self.db.read() as s:
            return list(s.scalars(select(Job.node_id).where(Job.state.in_(("dispatched", "submitted", "running")))))

    def endings_told(self) -> None:
        return None  # the users' events stay inside the studio process

    def dead_letters(self) -> list[Any]:
        count = int(_gauge(self.studio.metrics(), "studio_dead_letters"))
        return [_Counted(f"{count} dead letter(s) in the studio (see its admin page)")] if count else []

    def logs(self) -> str:
        parts = [f"---- {proc.name} ({proc.log}) ----\n{proc.tail(2500)}" for proc in [self.studio, *self.sims.values()]]
        return "\n".join(parts)


@dataclass
class _Counted:
    reason: str
    queue: str = "lifecycle"
    body: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def running_embedded(data_dir: Path, *, nodes: int = 2, users: int = 3) -> Iterator[EmbeddedCluster]:
    data_dir.mkdir(parents=True)
    sims = {f"node-{i}": SimProcess(f"node-{i}", data_dir.parent) for i in range(1, nodes + 1)}
    db = Database(f"sqlite:///{data_dir / 'studio.db'}")
    migrate.upgrade(db)
    library = Library.load(REPO_ROOT / "workflows")
    submitter = Backend(settings=Settings(data_dir=data_dir), db=db, bus=MemoryBus(), registry=MemoryRegistry(),
                        library=library, blobs=BlobStore(data_dir / "assets"))
    studio = StudioProcess(data_dir, [sim.url for sim in sims.values()])
    cluster = EmbeddedCluster(studio=studio, sims=sims, db=db, data_dir=data_dir, submitter=submitter)
    try:
        for sim in sims.values():
            sim.start()
        for node_id, sim in sims.items():
            sim.wait_up()
            client = ComfyClient(sim.url)
            submitter.registry.set_capabilities(node_id, read_capabilities(client))
            # Many slots: submit never asks "queue anyway?"; the studio's own registry decides.
            submitter.registry.heartbeat(NodeState(node_id=node_id, online=True, slots=1000, following=()), ttl=10**6)
            client.close()
        studio.start()
        studio.wait_up(nodes)
        for i in range(users):
            user = make_user(db, f"chaos-{i}", credits=1_000_000)
            cluster.users.append(user)
            cluster.images[user.id] = assets.store_upload(db, submitter.blobs, user.id, [png_bytes(64 + 8 * i, 48)], name="in.png",
                                                          max_bytes=10 << 20, max_pixels=10**7).id
        yield cluster
    finally:
        studio.stop(timeout=30)
        for sim in sims.values():
            sim.terminate()
        for sim in sims.values():
            sim.stop()
        submitter.close()


def kill_studio(cluster: EmbeddedCluster, rng: Any, load: Any) -> None:
    """SIGKILL the embedded studio mid-job and start it again: its registry, its bus (job
    messages, agent events not applied yet) and its agents die; the ComfyUIs go on.
    Killed while every node's slots are taken (if that happens within a few seconds), so
    a restarted studio that forgot those slots would book them twice."""
    def full() -> bool:
        on_nodes = collections.Counter(cluster._active_nodes())
        return all(on_nodes.get(node, 0) >= 2 for node in cluster.sims)

    with contextlib.suppress(AssertionError):
        wait_for(full, 5, "every node's slots taken", interval=0.05)
    time.sleep(rng.uniform(0.0, 0.5))
    cluster.studio.kill()
    time.sleep(rng.uniform(0.0, 1.0))
    cluster.studio.start()
    cluster.studio.wait_up(len(cluster.sims))

