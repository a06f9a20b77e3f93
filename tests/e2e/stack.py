"""A whole studio back end in one test process: database, bus, registry, worker, nodes.

``Stack`` runs in two modes: **embedded** (SQLite, in-process bus and registry) and
**distributed** (PostgreSQL, RabbitMQ, Redis). The nodes are comfysim servers, each with
a real agent as a thread (or as a process, for crash tests). Everything a test needs to
drive it — users, uploads, submits, waiting for the end of jobs, collecting the user
events — is here, so the tests read as scenarios.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from agent.agent import Agent
from agent.config import AgentConfig
from backend import assets, jobs
from backend.accounts import ledger
from backend.assets.blobs import LocalBlobStore
from backend.assets.stores import open_blob_store
from backend.config import REPO_ROOT, Settings
from backend.db import Database
from backend.db.models import Job, User
from backend.jobs.state import TERMINAL as TERMINAL_STATES
from backend.ports.bus import Bus
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.ports.registry import Registry
from backend.runtime import Backend
from backend.jobs.submit import Accepted, submit
from backend.jobs.sweeper import SweepPolicy
from backend.jobs.worker import Worker
from backend.workflows import Library
from comfysim import DEMO_MODELS, SimConfig, start_sims
from tests.backend.helpers import make_user
from tests.waiting import wait_for

__all__ = ["FAST_AGENT", "FAST_SWEEP", "Stack", "build_backend", "memory_ports", "png_bytes", "running_stack", "wait_for"]

#: Agent timings for tests: fast heartbeats and reconciliation. The state TTL is 20
#: heartbeats: with 2 s (4 heartbeats), a loaded machine (two suites at once) starved the
#: agents' threads long enough that both nodes of a stack expired and the CLI listed none.
#: A test that wants a node to expire sooner gives its agent a TTL of its own.
FAST_AGENT = dict(heartbeat_interval=0.5, state_ttl=10.0, silence_timeout=3.0, poll_interval=0.3, reconnect_max=1.0)
#: Sweeper timings for tests.
FAST_SWEEP = SweepPolicy(offline_grace=2.0, republish_after=5.0, max_attempts=5, agent_lost_after=4.0, adopt_after=10.0)


def png_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Stack:
    backend: Backend
    worker: Worker
    sims: Any  # comfysim.SimCluster
    agents: dict[str, Agent] = field(default_factory=dict)
    events: "queue.Queue[dict[str, Any]]" = field(default_factory=queue.Queue)

    @property
    def db(self) -> Database:
        return self.backend.db

    def user(self, name: str, credits: int = 1000) -> User:
        return make_user(self.db, name, credits=credits)

    def upload(self, user: User, data: bytes | None = None) -> str:
        record = assets.store_upload(
            self.db, self.backend.blobs, user.id, [data or png_bytes()], name="in.png",
            max_bytes=self.backend.settings.max_upload_bytes, max_pixels=self.backend.settings.max_image_pixels,
        )
        return record.id

    def submit(self, user: User, workflow: str, params: dict[str, Any], **kw: Any) -> Any:
        return submit(self.backend, user.id, workflow, params, idempotency_key=uuid.uuid4().hex, on_queued=self.worker.wake, **kw)

    def accepted(self, user: User, workflow: str, params: dict[str, Any], **kw: Any) -> Job:
        result = self.submit(user, workflow, params, **kw)
        assert isinstance(result, Accepted), result
        return result.job

    def wait_ended(self, job_ids: list[str], timeout: float = 60.0) -> dict[str, Job]:
        """Wait until every job is in a terminal state; their final rows."""
        deadline = time.monotonic() + timeout
        while True:
            with self.db.read() as s:
                rows = {j.id: j for j in s.query(Job).filter(Job.id.in_(job_ids))}
            if all(r.state in TERMINAL_STATES for r in rows.values()) and len(rows) == len(job_ids):
                return rows
            if time.monotonic() > deadline:
                states = {i: r.state for i, r in rows.items()}
                raise AssertionError(f"jobs not ended within {timeout} s: {states}")
            time.sleep(0.1)

    def events_until_ended(self, job_ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
        """The user events received until each of ``job_ids`` has told its user how it
        ended (succeeded, failed or cancelled) — waiting for those, not for a time window."""
        seen: list[dict[str, Any]] = []
        waiting = set(job_ids)
        deadline = time.monotonic() + timeout
        while waiting:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no ending event within {timeout} s for {sorted(waiting)}") from None
            seen.append(event)
            if event["type"] in TERMINAL_STATES:
                waiting.discard(event["job_id"])
        return seen

    def wait_nodes(self, count: int, timeout: float = 60.0) -> None:
        wait_for(lambda: sum(v.state.online for v in self.backend.registry.nodes()) >= count, timeout,
                 f"{count} node(s) online")

    def check_books(self) -> None:
        problems = ledger.verify(self.db)
        assert problems == [], [str(p) for p in problems]

    def check_reservations_match_jobs(self) -> None:
        """Reservations in the registry == jobs holding a node in the database."""
        with self.db.read() as s:
            active = {
                f"{j.id}-{j.attempts}"
                for j in s.query(Job).filter(Job.state.in_(("dispatched", "submitted", "running")))
            }
        held = {t for n in self.backend.registry.reserved_nodes() for t in self.backend.registry.reservations(n)}
        assert held == active, (held, active)

    def job(self, job_id: str) -> Job:
        return jobs.get(self.db, job_id)


def build_backend(db: Database, bus: Bus, registry: Registry, tmp: Path, s3: Settings | None = None) -> Backend:
    """``s3``: settings of an S3 asset store (its ``data_dir`` is replaced by ``tmp``)."""
    settings = Settings(data_dir=tmp) if s3 is None else dataclasses.replace(s3, data_dir=tmp)
    return Backend(
        settings=settings,
        db=db,
        bus=bus,
        registry=registry,
        library=Library.load(REPO_ROOT / "workflows"),
        blobs=LocalBlobStore(tmp / "assets", durable=False) if s3 is None else open_blob_store(settings),
    )


@contextlib.contextmanager
def running_stack(
    db: Database, bus: Bus, registry: Registry, tmp: Path, *, nodes: int = 2, sim: SimConfig | None = None,
    agent_threads: bool = True, s3: Settings | None = None, agent_s3: Settings | None = None,
) -> Iterator[Stack]:
    """``s3``: keep assets in that S3 store; then each agent has a data directory of its own
    (no shared mount) and its own client of the store, with ``agent_s3``'s credential."""
    backend = build_backend(db, bus, registry, tmp, s3)
    worker = Worker(backend, dispatch_interval=0.2, sweep_interval=0.5, sweep_policy=FAST_SWEEP).start()
    sims = start_sims(nodes, sim or SimConfig(models=DEMO_MODELS, step_seconds=0.01))
    stack = Stack(backend=backend, worker=worker, sims=sims)
    subscription = bus.subscribe_user_events(stack.events.put)
    try:
        if agent_threads:
            for i, url in enumerate(sims.urls, 1):
                own = tmp / f"agent-{i}"  # with S3, nothing on disk is shared with the studio
                assets_dir = tmp / "assets" if s3 is None else own / "assets"
                config = AgentConfig(node_id=f"sim-{i}", comfy_url=url, assets_dir=assets_dir,
                                     label=f"sim {i}", **FAST_AGENT)
                blobs = backend.blobs if s3 is None else open_blob_store(dataclasses.replace(agent_s3 or s3, data_dir=own))
                agent = Agent(config, bus=bus, registry=registry, blobs=blobs)
                agent.start()
                stack.agents[config.node_id] = agent
            stack.wait_nodes(nodes)
        yield stack
    finally:
        for agent in stack.agents.values():
            agent.stop()
        worker.stop()
        subscription.close()
        sims.stop()


def memory_ports() -> tuple[MemoryBus, MemoryRegistry]:
    return MemoryBus(), MemoryRegistry()
