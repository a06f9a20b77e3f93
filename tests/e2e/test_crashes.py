"""Crashes in the distributed stack (PostgreSQL, RabbitMQ, Redis): an agent SIGKILLed mid-job
(restarted, and not), ComfyUI killed mid-job, and a websocket dropped and gone silent.

Whatever happens, every job ends in exactly one terminal state, ComfyUI runs each prompt once, no credit is lost or doubled (``ledger.verify``), and the
registry's reservations equal the jobs holding a node.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import Agent, AgentConfig
from backend.accounts import ledger
from backend.config import REPO_ROOT
from backend.db import Database
from backend.db.models import Job
from comfysim import DEMO_MODELS, SimConfig, SimHandle

from .. import services
from ..conftest import empty_all_tables
from .stack import FAST_AGENT, Stack, running_stack, wait_for

#: Ceiling for a crash to settle every job (node expiry + sweep + a rerun elsewhere). A
#: ceiling, not a target: it is reached only when something is stuck, so it leaves room for
#: a loaded machine; how fast recovery is belongs to the benchmarks.
SETTLE = 120.0
#: Ceiling for ``python -m agent`` to start and report in (imports alone took 8 s on a busy
#: two-core machine).
START = 90.0
#: State TTL of an agent that is killed and restarted: far longer than a restart can take,
#: so the node never expires meanwhile (that is the premise of the test).
RESTART_TTL = 300.0
SIM = SimConfig(models=DEMO_MODELS, step_seconds=0.01)


# ---- building blocks -----------------------------------------------------------------------


@pytest.fixture
def ports(_postgres_db: Database) -> Iterator[tuple[Database, Any, Any]]:
    empty_all_tables(_postgres_db)
    with services.rabbit_bus() as bus, services.redis_registry() as registry:
        yield _postgres_db, bus, registry


def _registry_prefix(registry: Any) -> str:
    return registry._base[1:-2]  # "{prefix}:" → prefix


class AgentProcess:
    """``python -m agent`` for one node, on the test's bus and registry prefixes."""

    def __init__(self, stack: Stack, node_id: str, url: str, data_dir: Path, *, state_ttl: float) -> None:
        self.stack = stack
        self.node_id = node_id
        self.args = [
            sys.executable, "-m", "agent", "--comfy-url", url, "--node-id", node_id, "--label", node_id,
            "--bus-prefix", stack.backend.bus.prefix,  # type: ignore[attr-defined]
            "--registry-prefix", _registry_prefix(stack.backend.registry),
            "--heartbeat-interval", str(FAST_AGENT["heartbeat_interval"]),
            "--state-ttl", str(state_ttl),
            "--silence-timeout", str(FAST_AGENT["silence_timeout"]),
            "--poll-interval", str(FAST_AGENT["poll_interval"]),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
        env.update(STUDIO_AMQP_URL=services.AMQP_URL, STUDIO_REDIS_URL=services.REDIS_URL, STUDIO_DATA_DIR=str(data_dir))
        self.env = env
        self.log = data_dir / f"agent-{node_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> AgentProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.started_at = time.time()
        return self

    def wait_online(self, timeout: float = START) -> None:
        """Until this process (not an earlier one) reported the node online."""
        def online() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"agent exited:\n{self.tail()}"
            return any(
                v.state.node_id == self.node_id and v.state.online and v.state.updated_at >= self.started_at
                for v in self.stack.backend.registry.nodes()
            )

        wait_for(online, timeout, f"agent {self.node_id} online")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def wait_state(stack: Stack, job_id: str, *states: str, timeout: float = 60.0) -> Job:
    return wait_for(lambda: (job := stack.job(job_id)).state in states and job, timeout, f"job {job_id} in {states}")


def thread_agent(stack: Stack, node_id: str, url: str, tmp: Path) -> Agent:
    config = AgentConfig(node_id=node_id, comfy_url=url, assets_dir=tmp / "assets", label=node_id, **FAST_AGENT)  # type: ignore[arg-type]
    agent = Agent(config, bus=stack.backend.bus, registry=stack.backend.registry, blobs=stack.backend.blobs)
    agent.start()
    stack.agents[node_id] = agent  # stopped by running_stack
    wait_for(lambda: agent.online, 60, f"agent {node_id} online")
    return agent


def count_posts(sim: SimHandle) -> collections.Counter[str]:
    """Prompt ids queued on an in-process sim, with how often each was POSTed."""
    counts: collections.Counter[str] = collections.Counter()
    queue, put = sim.node.queue, sim.node.queue.put

    def counting_put(item: Any) -> None:
        counts[item.prompt_id] += 1
        put(item)

    queue.put = counting_put  # type: ignore[method-assign]
    return counts


def settled(stack: Stack, job_ids: list[str], timeout: float = SETTLE) -> dict[str, Job]:
    """Wait for the end of the jobs, then check the books, the reservations and that each
    job told its user exactly one ending."""
    ended = stack.wait_ended(job_ids, timeout=timeout)
    endings = collections.Counter(
        e["job_id"] for e in stack.events_until_ended(job_ids) if e["type"] in ("succeeded", "failed", "cancelled")
    )
    stack.check_books()

    def reservations_match() -> bool:
        try:
            stack.check_reservations_match_jobs()
            return True
        except AssertionError:
            return False

    wait_for(reservations_match, 30, "reservations == active jobs")
    assert all(endings[j] == 1 for j in job_ids), endings
    return ended


def balance(stack: Stack, user_id: int) -> int:
    with stack.db.read() as s:
        return ledger.balance(s, user_id)


def txt2img(stack: Stack, user: Any, prompt: str) -> Job:
    return stack.accepted(user, "txt2img-sd15", {"prompt": prompt, "seed": len(prompt)}, queue_if_busy=True)


def sim_queue(url: str) -> tuple[set[str], set[str]]:
    data = requests.get(f"{url}/queue", timeout=5).json()
    return {i[1] for i in data["queue_running"]}, {i[1] for i in data["queue_pending"]}


def sim_history(url: str, prompt_id: str) -> dict[str, Any]:
    return requests.get(f"{url}/history/{prompt_id}", timeout=5).json().get(prompt_id) or {}


# ---- the crashes -------------------------------------------------------------------------


def test_agent_sigkilled_mid_job_and_restarted_adopts_its_jobs(ports: tuple, tmp_path: Path) -> None:
    db, bus, registry = ports
    with running_stack(db, bus, registry, tmp_path, nodes=1, sim=SIM, agent_threads=False) as stack:
        sim = stack.sims.nodes[0]
        posts = count_posts(sim)
        sim.set_faults(hang_in_node="KSampler")
        agent = AgentProcess(stack, "sim-1", sim.url, tmp_path, state_ttl=RESTART_TTL).start()
        try:
            agent.wait_online()
            user = stack.user("ann", 1000)
            running = txt2img(stack, user, "a lighthouse")
            wait_state(stack, running.id, "running")
            waiting = txt2img(stack, user, "a harbour")
            wait_state(stack, waiting.id, "submitted")  # queued in ComfyUI behind the first

            agent.kill()
            agent.start()
            agent.wait_online()
            sim.reset_faults()
            ended = settled(stack, [running.id, waiting.id])
        finally:
            agent.stop()
        assert {j.state for j in ended.values()} == {"succeeded"}, {j.id: (j.state, j.error_message) for j in ended.values()}
        assert {(j.attempts, j.node_id) for j in ended.values()} == {(1, "sim-1")}  # adopted, not rerun
        assert posts == {f"{running.id}-1": 1, f"{waiting.id}-1": 1}
        assert balance(stack, user.id) == 1000 - running.cost - waiting.cost
        assert "adopted from the journal" in agent.tail()
        wait_for(lambda: not list((tmp_path / "agent-state" / "sim-1").iterdir()), 30, "journal emptied")


def test_agent_sigkilled_for_good_its_jobs_fail_or_move_and_its_prompts_are_stopped_on_return(
    ports: tuple, tmp_path: Path
) -> None:
    db, bus, registry = ports
    with running_stack(db, bus, registry, tmp_path, nodes=2, sim=SIM, agent_threads=False) as stack:
        doomed, spare = stack.sims.nodes
        posts, spare_posts = count_posts(doomed), count_posts(spare)
        doomed.set_faults(hang_in_node="KSampler")
        agent = AgentProcess(stack, "sim-1", doomed.url, tmp_path, state_ttl=FAST_AGENT["state_ttl"]).start()
        try:
            agent.wait_online()
            user = stack.user("bea", 1000)
            running = txt2img(stack, user, "a fox")
            wait_state(stack, running.id, "running")
            waiting = txt2img(stack, user, "a wolf")
            wait_state(stack, waiting.id, "submitted")
            thread_agent(stack, "sim-2", spare.url, tmp_path)  # only now, so both jobs went to sim-1

            agent.kill()
            ended = settled(stack, [running.id, waiting.id])
            assert (ended[running.id].state, ended[running.id].error_type) == ("failed", "NodeLost")
            assert (ended[waiting.id].state, ended[waiting.id].node_id, ended[waiting.id].attempts) == ("succeeded", "sim-2", 2)
            assert balance(stack, user.id) == 1000 - waiting.cost  # the failed one refunded, once
            assert posts == {f"{running.id}-1": 1, f"{waiting.id}-1": 1} and spare_posts == {f"{waiting.id}-2": 1}

            # The agent comes back: its journal names two jobs whose slots are gone, so it
            # deletes the waiting prompt and interrupts the running one; neither runs here.
            agent.start()
            agent.wait_online()
            wait_for(lambda: sim_queue(doomed.url)[1] == set(), 30, "stale pending prompt deleted")
            doomed.reset_faults()
            entry = wait_for(lambda: sim_history(doomed.url, f"{running.id}-1"), 30, "stale running prompt interrupted")
            assert entry["status"]["status_str"] == "error"
            assert not sim_history(doomed.url, f"{waiting.id}-1")
            assert {j.state for j in stack.wait_ended([running.id, waiting.id]).values()} == {"failed", "succeeded"}
            stack.check_books()
        finally:
            agent.stop()


def test_comfyui_killed_mid_job_fails_the_running_job_and_moves_the_waiting_one(ports: tuple, tmp_path: Path) -> None:
    db, bus, registry = ports
    port = services.free_port()
    with open(tmp_path / "comfysim.log", "wb") as sim_log:  # Popen keeps its own copy of the fd
        comfy = subprocess.Popen(
            [sys.executable, "-m", "comfysim", "--port", str(port), "--demo-models", "--step-seconds", "0.01",
             "--fault-hang-in-node", "KSampler", "--data-dir", str(tmp_path / "doomed")],
            cwd=REPO_ROOT, stdout=sim_log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), START, "comfysim subprocess up")
        with running_stack(db, bus, registry, tmp_path, nodes=1, sim=SIM, agent_threads=False) as stack:
            spare_posts = count_posts(stack.sims.nodes[0])
            thread_agent(stack, "doomed", url, tmp_path)
            user = stack.user("cid", 1000)
            running = txt2img(stack, user, "a cat")
            wait_state(stack, running.id, "running")
            waiting = txt2img(stack, user, "a dog")
            wait_state(stack, waiting.id, "submitted")
            thread_agent(stack, "sim-1", stack.sims.urls[0], tmp_path)

            comfy.send_signal(signal.SIGKILL)  # ComfyUI dies with the job half done
            comfy.wait(5)
            ended = settled(stack, [running.id, waiting.id])
            assert ended[running.id].state == "failed" and ended[running.id].error_type in ("NodeLost", "Lost")
            assert (ended[waiting.id].state, ended[waiting.id].node_id, ended[waiting.id].attempts) == ("succeeded", "sim-1", 2)
            assert balance(stack, user.id) == 1000 - waiting.cost
            assert spare_posts == {f"{waiting.id}-2": 1}
            assert not stack.agents["doomed"].online
            assert stack.agents["doomed"].runner.active() == {}  # it dropped both: their slots are gone
    finally:
        if comfy.poll() is None:
            comfy.kill()
            comfy.wait(5)


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/system_stats", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_a_dropped_then_silent_websocket_mid_job_still_ends_every_job_once(ports: tuple, tmp_path: Path) -> None:
    db, bus, registry = ports
    with running_stack(db, bus, registry, tmp_path, nodes=1, sim=SIM, agent_threads=False) as stack:
        sim = stack.sims.nodes[0]
        posts = count_posts(sim)
        sim.set_faults(hang_in_node="KSampler")
        agent = thread_agent(stack, "sim-1", sim.url, tmp_path)
        user = stack.user("dan", 1000)
        first = txt2img(stack, user, "a river")
        wait_state(stack, first.id, "running")
        old_session = agent.socket.client_id
        sim.close_websockets()
        wait_for(lambda: agent.socket.client_id not in (None, old_session), 30, "a fresh session")
        # The first job finishes while its events go to the dead session; the second runs
        # under a session that never hears a thing.
        sim.set_faults(hang_in_node=None, ws_silent=True)
        second = txt2img(stack, user, "a lake")
        ended = settled(stack, [first.id, second.id])
        assert {j.state for j in ended.values()} == {"succeeded"}
        assert posts == {f"{first.id}-1": 1, f"{second.id}-1": 1}
        assert balance(stack, user.id) == 1000 - first.cost - second.cost
