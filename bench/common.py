"""What every benchmark shares: percentiles, the distributed stack, and docs/performance.md.

Benchmarks run against the real servers (PostgreSQL, Redis, RabbitMQ on 127.0.0.1, or the
``STUDIO_TEST_*_URL`` overrides the test suite uses) and comfysim nodes with real agents,
all under private names (a PostgreSQL schema, a Redis key prefix, a RabbitMQ prefix) that
are removed afterwards, so a benchmark never touches anyone else's data.

A benchmark prints its figures and writes them into its own section of
``docs/performance.md`` (between ``<!-- bench:NAME -->`` markers), leaving the others alone.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from backend.ports.registry import DEFAULT_TTL_SECONDS

from tests import services

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "performance.md"
BENCH_WORKFLOWS = Path(__file__).resolve().parent / "workflows"

POSTGRES_URL = os.environ.get("STUDIO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("STUDIO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


# ---- figures -----------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Runs:
    """Latency samples (seconds) of repeated runs: per-run p50/p99 and their medians."""

    runs: list[list[float]] = field(default_factory=list)

    def add(self, samples: list[float]) -> None:
        self.runs.append(list(samples))

    def p(self, q: float) -> float:
        """Median over the runs of each run's ``q``-th percentile, in seconds (NaN: no samples)."""
        values = [percentile(r, q) for r in self.runs if r]
        return statistics.median(values) if values else math.nan

    def per_run(self, q: float) -> list[float]:
        return [percentile(r, q) for r in self.runs]

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.runs)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def ms_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v * 1000:.2f}" for v in values)


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- docs/performance.md -----------------------------------------------------------------

_HEADER = """# Performance

Figures measured by `python -m bench` on the development machine (2 cores) against real
PostgreSQL, Redis and RabbitMQ on 127.0.0.1 and comfysim nodes driven by real agents. Each
section is rewritten by its own benchmark; the command under each heading reproduces it.
Figures stand as measured: where a target is missed, the section says why (profiled) and
what was changed because of it.
"""


def write_section(name: str, body: str, *, path: Path = DOC) -> None:
    """Replace the ``name`` section of the performance doc (appending it the first time)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _m: block, doc)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc, encoding="utf-8")


def machine() -> str:
    import platform

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores (load average at the end: {load}), Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}"


# ---- private server resources ----------------------------------------------------------

def private(kind: str) -> str:
    return f"bench-{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def postgres_db() -> Iterator[Any]:
    """A migrated Database in a private PostgreSQL schema, dropped afterwards."""
    from backend.db import Database, migrate

    schema = private("db").replace("-", "_")
    admin = Database(POSTGRES_URL)
    with admin.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    db = Database(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}")
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.dispose()
        with admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def rabbit_bus(**options: Any) -> Iterator[Any]:
    """A RabbitBus under a private prefix; its queues and exchanges are deleted afterwards."""
    from backend.ports.rabbitmq import RabbitBus

    bus = RabbitBus(AMQP_URL, prefix=private("bus"), **options)
    try:
        yield bus
    finally:
        bus.close()
        services.delete_rabbit_topology(bus.topology)


@contextlib.contextmanager
def redis_registry() -> Iterator[Any]:
    """A RedisRegistry under a private prefix; its keys are deleted afterwards."""
    from backend.ports.redis_registry import RedisRegistry

    prefix = private("registry")
    registry = RedisRegistry(REDIS_URL, prefix=prefix)
    try:
        yield registry
    finally:
        registry.close()
        services.delete_redis_keys(prefix)


# ---- a whole distributed stack in this process -----------------------------------------

#: Agent timings: quick heartbeats so the nodes are online soon after start, and the
#: operators' state TTL: the agents share this process with the load, and on a busy
#: machine a heartbeat came more than 3 s late, so a node dropped out and submits were
#: refused ("No online node can run this workflow").
AGENT_TIMING = {"heartbeat_interval": 0.5, "state_ttl": DEFAULT_TTL_SECONDS, "silence_timeout": 10.0,
                "poll_interval": 0.5, "reconnect_max": 1.0}


@dataclass
class Stack:
    backend: Any
    worker: Any
    sims: Any
    agents: dict[str, Any]
    tmp: Path

    def user(self, name: str, credits: int = 10**9) -> Any:
        from argon2 import PasswordHasher

        from backend import accounts

        cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        return accounts.create_user(self.backend.db, name, "bench password 1", welcome_credits=credits, hasher=cheap)

    def wait_nodes(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(v.state.online for v in self.backend.registry.nodes()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} node(s) not online within {timeout} s")
            time.sleep(0.05)

    def wait_ended(self, job_ids: Sequence[str], timeout: float = 120.0, poll: float = 0.05) -> dict[str, Any]:
        from backend.db.models import Job
        from backend.jobs.state import TERMINAL as TERMINAL_STATES

        deadline = time.monotonic() + timeout
        while True:
            with self.backend.db.read() as s:
                rows = {j.id: j for j in s.query(Job).filter(Job.id.in_(list(job_ids)))}
            if len(rows) == len(job_ids) and all(r.state in TERMINAL_STATES for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                left = sum(r.state not in TERMINAL_STATES for r in rows.values())
                raise RuntimeError(f"{left} job(s) not ended within {timeout} s")
            time.sleep(poll)


def build_backend(db: Any, bus: Any, registry: Any, tmp: Path, library: Any, blobs: Any = None) -> Any:
    """``blobs``: the asset store (default: a non-durable directory under ``tmp``)."""
    from backend.assets.blobs import LocalBlobStore
    from backend.config import Settings
    from backend.runtime import Backend

    return Backend(
        settings=Settings(data_dir=tmp, max_upload_bytes=64 * 1024 * 1024),
        db=db,
        bus=bus,
        registry=registry,
        library=library,
        blobs=blobs if blobs is not None else LocalBlobStore(tmp / "assets", durable=False),
    )


def library(*directories: Path) -> Any:
    """The workflows of ``directories`` together (e.g. the shipped ones and bench/workflows)."""
    from backend.workflows import Library

    specs = [spec for directory in directories for spec in Library.load(directory)]
    return Library(specs=specs)


@contextlib.contextmanager
def distributed_stack(
    *,
    nodes: int,
    sim: Any,
    workflows: Any,
    depth: int = 1,
    dispatch_interval: float = 0.5,
    registry_wrapper: Callable[[Any], Any] | None = None,
    before_agent_start: Callable[[Any], None] | None = None,
    bus_options: dict[str, Any] | None = None,
    blobs: Callable[[Path], Any] | None = None,
    hosts: int = 0,
) -> Iterator[Stack]:
    """PostgreSQL + RabbitMQ + Redis, a Worker, ``nodes`` comfysim nodes and their agents.

    ``hosts``: run the nodes and agents in that many child processes (:func:`host_processes`)
    instead of this one, as GPU hosts are other machines (``before_agent_start`` and a
    non-default ``blobs`` need them here).

    ``registry_wrapper`` wraps the registry the *backend* sees (the agents keep the real
    one): the cluster benchmark plugs alternative placement policies in there.
    ``before_agent_start(agent)`` lets a benchmark attach its probes to an agent.
    ``blobs(path)`` makes an asset store for the studio and for each agent (``path``: a
    scratch directory of its own); default: one directory shared by all.
    """
    from agent.agent import Agent
    from agent.config import AgentConfig
    from backend.jobs.sweeper import SweepPolicy
    from backend.jobs.worker import Worker
    from comfysim import start_sims

    tmp = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    try:
        with postgres_db() as db, rabbit_bus(**(bus_options or {})) as bus, redis_registry() as registry:
            seen = registry_wrapper(registry) if registry_wrapper else registry
            backend = build_backend(db, bus, seen, tmp, workflows, blobs(tmp / "studio") if blobs else None)
            worker = Worker(
                backend,
                dispatch_interval=dispatch_interval,
                sweep_interval=1.0,
                sweep_policy=SweepPolicy(offline_grace=5.0, republish_after=30.0, max_attempts=5),
            ).start()
            # nodes=0: the nodes and their agents run elsewhere (see bench.hosts).
            sims = start_sims(nodes, sim) if nodes and not hosts else None
            agents: dict[str, Any] = {}
            stack = Stack(backend=backend, worker=worker, sims=sims, agents=agents, tmp=tmp)
            elsewhere = contextlib.ExitStack()
            try:
                if hosts:
                    elsewhere.enter_context(host_processes(backend, tmp, nodes=nodes, processes=hosts,
                                                           step_seconds=sim.step_seconds, depth=depth))
                for i, url in enumerate(sims.urls if sims else [], 1):
                    config = AgentConfig(
                        node_id=f"sim-{i}", comfy_url=url, assets_dir=tmp / "assets", label=f"sim {i}",
                        depth=depth, previews=False, **AGENT_TIMING,
                    )
                    store = blobs(tmp / f"agent-{i}") if blobs else backend.blobs
                    agent = Agent(config, bus=bus, registry=registry, blobs=store)
                    if before_agent_start:
                        before_agent_start(agent)
                    agent.start()
                    agents[config.node_id] = agent
                stack.wait_nodes(nodes)
                yield stack
            finally:
                for agent in agents.values():
                    agent.stop()
                elsewhere.close()
                worker.stop()
                if sims:
                    sims.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def host_processes(backend: Any, tmp: Path, *, nodes: int, processes: int, step_seconds: float, depth: int = 1,
                   record: bool = False) -> Iterator[list[Path]]:
    """``nodes`` comfysim nodes (``sim-1`` …) with their agents, split over ``processes``
    child processes (``python -m bench.hosts``) on ``backend``'s bus and registry; yields
    once every process has started its agents. ``record``: each process writes when
    comfysim emitted each progress event to a file of the yielded list, once the block
    has ended."""
    import subprocess
    import sys

    registry_prefix = backend.registry.key_prefix[1:-2]  # "{prefix}:" -> prefix
    processes = max(1, min(processes, nodes))  # none without a node
    records: list[Path] = []
    children: list[subprocess.Popen[str]] = []
    try:
        for i in range(processes):
            first, last = i * nodes // processes, (i + 1) * nodes // processes
            command = [sys.executable, "-m", "bench.hosts", "--nodes", str(last - first), "--first", str(first + 1),
                       "--depth", str(depth), "--step-seconds", repr(step_seconds), "--bus-prefix", backend.bus.prefix,
                       "--registry-prefix", registry_prefix, "--assets", str(tmp / "assets")]
            if record:
                records.append(tmp / f"emitted-{i}.json")
                command += ["--record", str(records[-1])]
            children.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True))
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a host process did not start")
        yield records
    finally:
        for child in children:
            child.communicate("", timeout=60)  # closing its stdin stops it; it writes its record


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    """A RabbitMQ of the benchmark's own for the block (the test suite's
    ``tests/private_servers.py``), yielding its URL; :data:`AMQP_URL` and the variable the
    host processes read point at it meanwhile. For cluster sizes the shared broker cannot
    hold: each node has a quorum job queue (a few open files each) and a connection, and a
    RabbitMQ started with the usual limit of 1,024 open files refuses connections and
    leaves publishes unconfirmed at about 200 nodes. The private one inherits this
    process's limit (``ulimit -n``)."""
    global AMQP_URL
    from tests import private_servers

    with private_servers.private_servers("rabbitmq") as servers:
        assert servers.rabbitmq is not None
        saved = AMQP_URL, os.environ.get("STUDIO_TEST_AMQP_URL")
        AMQP_URL = os.environ["STUDIO_TEST_AMQP_URL"] = servers.rabbitmq.url
        try:
            yield AMQP_URL
        finally:
            AMQP_URL = saved[0]
            if saved[1] is None:
                os.environ.pop("STUDIO_TEST_AMQP_URL", None)
            else:
                os.environ["STUDIO_TEST_AMQP_URL"] = saved[1]


def open_files_limit() -> int:
    """This process's open-file limit, which the servers it starts inherit."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quiet_logs() -> None:
    """Benchmarks print figures, not the INFO lines of every job."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.WARNING)
