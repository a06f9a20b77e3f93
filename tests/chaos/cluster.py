"""The cluster the chaos suite attacks: the distributed back end in the test process, and
per node a comfysim process and an agent process that can be SIGKILLed and restarted.

- The worker (dispatcher, lifecycle consumer, sweeper) runs in the test process with the
  fast test timings of ``tests/e2e/stack.py``, on PostgreSQL, RabbitMQ and Redis with
  private bus and registry prefixes.
- Each node is ``python -m tests.chaos.simproc`` (comfysim plus a tally of the prompts it
  was given, started and finished, see ``simproc.py``) on a fixed port, so a killed node
  comes back where its agent looks for it, and ``python -m agent`` for it.
- :class:`Load` submits a steady mix of workflows for several users from its own thread.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
from sqlalchemy import select

from backend.config import REPO_ROOT
from backend.db import Database
from backend.db.models import Job, User
from backend.errors import Unavailable
from backend.jobs.state import ACTIVE as ACTIVE_STATES
from backend.ports.bus import DeadLetter
from backend.jobs.submit import Accepted, NeedsConfirmation, Rejected, SubmitResult, submit
from backend.jobs.worker import Worker

from ..e2e.stack import FAST_AGENT, FAST_SWEEP, Stack, build_backend, png_bytes, wait_for
from ..private_servers import PrivateServers, free_port
from .checks import active_tickets

#: The agents' state TTL: longer than an agent restart takes on a busy machine (Python
#: imports alone took 8 s on a two-core host with a load of 16), so a SIGKILLed agent
#: that is restarted at once is adopted without its node expiring. One away for longer
#: (the partition scenario) expires; its jobs then wait for it (AGENT_LOST_AFTER).
AGENT_STATE_TTL = 15.0
#: Seconds per simulated sampler step.
STEP_SECONDS = 0.15
#: The class only the poison workflow uses: every node raises in it, always.
POISON_WORKFLOW = "photo-sharpen"
POISON_CLASS = "ImageSharpen"
#: How long the jobs of a node whose agent went silent wait for it: longer than the
#: partitions the suite makes (docs/agent.md), so a returning agent adopts its jobs.
AGENT_LOST_AFTER = 60.0
CHAOS_SWEEP = dataclasses.replace(FAST_SWEEP, agent_lost_after=AGENT_LOST_AFTER)


class _Process:
    """A subprocess with its log file, killable and restartable."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # wall clock, comparable with NodeState.updated_at

    def start(self) -> None:
        assert not self.alive, f"{self.name} is already running"
        with open(self.log, "ab") as out:  # Popen keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.started_at = time.time()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM); :meth:`stop` waits for it."""
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class SimProcess(_Process):
    """One comfysim node as a process, on a port it keeps across restarts."""

    def __init__(self, node_id: str, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tally = data_dir / f"tally-{node_id}.txt"
        args = [
            sys.executable, "-m", "tests.chaos.simproc", str(self.tally),
            "--port", str(self.port), "--demo-models", "--step-seconds", str(STEP_SECONDS),
            "--fault-raise-in-node", POISON_CLASS, "--data-dir", str(data_dir / f"comfy-{node_id}"),
        ]
        super().__init__(f"comfysim {node_id}", args, data_dir / f"comfysim-{node_id}.log")

    def answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/system_stats", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def wait_up(self, timeout: float = 20.0) -> None:
        wait_for(lambda: self._check_alive() and self.answers(), timeout, f"{self.name} answering")

    def _check_alive(self) -> bool:
        assert self.alive, f"{self.name} exited:\n{self.tail()}"
        return True

    def set_faults(self, **faults: Any) -> None:
        """Switch comfysim faults (``POST /sim/faults``); ``close_websockets=True`` is an action."""
        requests.post(f"{self.url}/sim/faults", json=faults, timeout=5).raise_for_status()


class AgentProcess(_Process):
    """``python -m agent`` for one node, on the cluster's bus and registry prefixes (the
    URLs may lead through a :class:`~tests.chaos.proxy.Proxy` that can cut it off)."""

    def __init__(self, node_id: str, sim: SimProcess, data_dir: Path, *, amqp_url: str, redis_url: str, bus_prefix: str,
                 registry_prefix: str) -> None:
        args = [
            sys.executable, "-m", "agent", "--comfy-url", sim.url, "--node-id", node_id, "--label", node_id,
            "--bus-prefix", bus_prefix, "--registry-prefix", registry_prefix,
            "--heartbeat-interval", str(FAST_AGENT["heartbeat_interval"]),
            "--state-ttl", str(AGENT_STATE_TTL),
            "--silence-timeout", str(FAST_AGENT["silence_timeout"]),
            "--poll-interval", str(FAST_AGENT["poll_interval"]),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        env.update(STUDIO_AMQP_URL=amqp_url, STUDIO_REDIS_URL=redis_url, STUDIO_DATA_DIR=str(data_dir))
        super().__init__(f"agent {node_id}", args, data_dir / f"agent-{node_id}.log", env)


@dataclass
class Node:
    node_id: str
    sim: SimProcess
    agent: AgentProcess


@dataclass
class Submitted:
    job_id: str
    workflow: str
    at: float  # monotonic


class Target(Protocol):
    """What :class:`Load` needs of a cluster: users, their images, a way to submit."""

    db: Database
    users: list[User]
    images: dict[int, str]

    def submit_job(self, user: User, workflow: str, params: dict[str, Any]) -> SubmitResult: ...

    def active_jobs(self) -> list[str]: ...


@dataclass
class Cluster:
    stack: Stack
    nodes: dict[str, Node]
    data_dir: Path
    #: The private PostgreSQL, Redis and RabbitMQ this cluster runs on (faults stop them).
    servers: PrivateServers
    users: list[User] = field(default_factory=list)
    images: dict[int, str] = field(default_factory=dict)  # user id -> uploaded asset id
    #: Per node, the proxy its agent reaches RabbitMQ and Redis through (partitions).
    proxies: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        return self.stack.db

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    def submit_job(self, user: User, workflow: str, params: dict[str, Any]) -> SubmitResult:
        return submit(self.stack.backend, user.id, workflow, params, idempotency_key=uuid.uuid4().hex, expert=True,
                      queue_if_busy=True, on_queued=self.stack.worker.wake)

    # -- what the checks observe (checks.Observed) --
    def tallies(self) -> list[Path]:
        return [node.sim.tally for node in self.nodes.values()]

    def reservations(self) -> tuple[set[str], set[str]]:
        registry = self.stack.backend.registry
        held = {t for n in registry.reserved_nodes() for t in registry.reservations(n)}
        return held, active_tickets(self.db)

    def endings_told(self) -> collections.Counter[str]:
        told: collections.Counter[str] = collections.Counter()
        while True:
            try:
                event = self.stack.events.get_nowait()
            except queue.Empty:
                return told
            if event.get("type") in ("succeeded", "failed", "cancelled"):
                told[event["job_id"]] += 1

    def dead_letters(self) -> list[DeadLetter]:
        return self.stack.backend.bus.dead_letters()

    def node_online_since(self, node_id: str, since: float) -> bool:
        """The node is online in the registry, reported after ``since`` (wall clock)."""
        try:
            views = self.stack.backend.registry.nodes()
        except Unavailable:  # Redis may be restarting
            return False
        return any(v.state.node_id == node_id and v.state.online and v.state.updated_at >= since for v in views)

    def wait_online(self, node_id: str, since: float, timeout: float = 25.0) -> None:
        node = self.nodes[node_id]

        def online() -> bool:
            assert node.agent.alive, f"{node.agent.name} exited:\n{node.agent.tail()}"
            return self.node_online_since(node_id, since)

        wait_for(online, timeout, f"node {node_id} online again", interval=0.05)

    def wait_all_online(self, since: float = 0.0, timeout: float = 25.0) -> None:
        for node_id in self.nodes:
            self.wait_online(node_id, since, timeout)

    def active_jobs(self) -> list[str]:
        """Jobs not ended yet (queued or on a node)."""
        with self.db.read() as s:
            return list(s.scalars(select(Job.id).where(Job.state.in_(ACTIVE_STATES))))

    def logs(self) -> str:
        """The tails of every process log, for a failure message."""
        parts = []
        for node in self.nodes.values():
            for proc in (node.sim, node.agent):
                parts.append(f"---- {proc.name} ({proc.log}) ----\n{proc.tail(1500)}")
        worker = self.data_dir / "worker.log"
        parts.append(f"---- worker ({worker}) ----\n{worker.read_text(errors='replace')[-3000:] if worker.exists() else ''}")
        return "\n".join(parts)


@contextlib.contextmanager
def running_cluster(db: Database, bus: Any, registry: Any, data_dir: Path, servers: PrivateServers, *, nodes: int = 3,
                    users: int = 4, proxied: bool = False) -> Iterator[Cluster]:
    """``proxied``: each agent reaches RabbitMQ and Redis through its own proxy, which the
    partition fault cuts."""
    backend = build_backend(db, bus, registry, data_dir)
    # The worker's log beside the processes' logs, for a failure's post-mortem.
    worker_log = logging.FileHandler(data_dir / "worker.log")
    worker_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    backend_logger = logging.getLogger("backend")
    old_level = backend_logger.level
    backend_logger.setLevel(logging.INFO)
    backend_logger.addHandler(worker_log)
    worker = Worker(backend, dispatch_interval=0.2, sweep_interval=0.5, sweep_policy=CHAOS_SWEEP).start()
    stack = Stack(backend=backend, worker=worker, sims=None)
    subscription = bus.subscribe_user_events(stack.events.put)
    registry_prefix = registry.key_prefix[1:-2]  # "{prefix}:" -> prefix
    cluster = Cluster(stack=stack, nodes={}, data_dir=data_dir, servers=servers)
    try:
        assert servers.rabbitmq is not None and servers.redis is not None
        for i in range(1, nodes + 1):
            node_id = f"node-{i}"
            sim = SimProcess(node_id, data_dir)
            amqp_url, redis_url = servers.rabbitmq.url, servers.redis.url
            if proxied:
                from .proxy import Proxy

                cluster.proxies[node_id] = proxy = Proxy({"amqp": servers.rabbitmq.port, "redis": servers.redis.port})
                amqp_url = amqp_url.replace(f":{servers.rabbitmq.port}/", f":{proxy.port('amqp')}/")
                redis_url = redis_url.replace(f":{servers.redis.port}/", f":{proxy.port('redis')}/")
            agent = AgentProcess(node_id, sim, data_dir, amqp_url=amqp_url, redis_url=redis_url,
                                 bus_prefix=bus.prefix, registry_prefix=registry_prefix)
            cluster.nodes[node_id] = Node(node_id, sim, agent)
        for node in cluster.nodes.values():
            node.sim.start()
        for node in cluster.nodes.values():
            node.sim.wait_up()
            node.agent.start()
        cluster.wait_all_online()
        for i in range(users):
            user = stack.user(f"chaos-{i}", 1_000_000)
            cluster.users.append(user)
            cluster.images[user.id] = stack.upload(user, png_bytes(64 + 8 * i, 48, (40 * i % 256, 90, 160)))
        yield cluster
    finally:
        agents = [node.agent for node in cluster.nodes.values()]
        for agent in agents:  # all at once: each takes a few seconds to stop cleanly
            agent.terminate()
        for agent in agents:
            agent.stop()
        worker.stop()
        subscription.close()
        for node in cluster.nodes.values():
            node.sim.terminate()
        for node in cluster.nodes.values():
            node.sim.stop()
        for proxy in cluster.proxies.values():
            proxy.close()
        backend_logger.removeHandler(worker_log)
        backend_logger.setLevel(old_level)
        worker_log.close()


class Load:
    """Submits a mix of jobs for the cluster's users at about ``rate`` per second (while
    fewer than ``max_waiting`` are unfinished), from its own thread, until stopped.
    Remembers every accepted job and every refusal."""

    def __init__(self, cluster: Target, rng: random.Random, *, rate: float = 3.0, max_waiting: int = 12) -> None:
        self.cluster = cluster
        self.rng = random.Random(rng.random())  # its own stream: the fault timing stays reproducible
        self.rate = rate
        self.max_waiting = max_waiting
        self.jobs: list[Submitted] = []
        self.refused: list[tuple[str, str]] = []  # (error type, message)
        self.poison: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the load generator is stuck in a submit"

    @property
    def job_ids(self) -> list[str]:
        with self._lock:
            return [j.job_id for j in self.jobs]

    def params(self, workflow: str, user: User) -> dict[str, Any]:
        rng, image = self.rng, self.cluster.images[user.id]
        if workflow == "txt2img-sd15":
            return {"prompt": f"chaos {rng.randrange(10**6)}", "seed": rng.randrange(2**32), "steps": rng.randint(4, 12),
                    "width": 256, "height": 256}
        if workflow == "invert-scale":
            return {"image": image, "scale": rng.choice([0.5, 1.0, 1.5])}
        if workflow == "photo-blur":
            return {"image": image, "radius": rng.randint(1, 4)}
        if workflow == "photo-flip":
            return {"image": image}
        if workflow == POISON_WORKFLOW:
            return {"image": image}
        raise ValueError(workflow)

    def submit(self, workflow: str, user: User | None = None) -> str | None:
        """Submit one job now (from any thread); its id, or None if it was refused."""
        user = user or self.rng.choice(self.cluster.users)
        result = self.cluster.submit_job(user, workflow, self.params(workflow, user))
        if isinstance(result, Accepted):
            with self._lock:
                self.jobs.append(Submitted(result.job.id, workflow, time.monotonic()))
            return result.job.id
        assert not isinstance(result, NeedsConfirmation), "queue_if_busy must queue"
        assert isinstance(result, Rejected)
        with self._lock:
            # Refusals are answers, not losses: nothing was charged (checked by ledger.verify).
            self.refused.append((type(result.error).__name__, f"{workflow}: {result.error.message}"))
        return None

    def _room(self) -> bool:
        """Fewer than ``max_waiting`` jobs unfinished; while the database is away, yes (the
        submit is then refused, like a creator's "try again in a moment")."""
        try:
            return len(self.cluster.active_jobs()) < self.max_waiting
        except Unavailable:
            return True

    def _run(self) -> None:
        mix = ["txt2img-sd15"] * 5 + ["invert-scale", "photo-blur", "photo-flip"] * 2
        while not self._stop.is_set():
            try:
                # Like creators who wait for their results: no new work while many jobs
                # are unfinished (an outage would otherwise pile up a backlog that takes
                # the rest of the suite's time to drain).
                if self._room():
                    self.submit(self.rng.choice(mix))
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on by the test
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.rng.expovariate(self.rate))
