"""The chaos suite: under a steady load of jobs, each fault is repeated at random points,
then every job must end once, nothing may be lost or run twice, and the books, the
reservations and the users' events must agree (see ``checks.py``).

Run it alone with ``.venv/bin/python -m pytest tests/chaos -s``; ``CHAOS_SEED=N``
repeats the fault timing of an earlier run (the seed is printed with the table).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from . import faults
from .checks import TABLE, Row, check, reservations_match, wait_terminal
from .cluster import Cluster, Load, wait_for

#: Longest the jobs may take to end once the load stops and the last fault healed.
SETTLE_BOUND = 45.0


@dataclass(frozen=True)
class Scenario:
    fault: Callable[[Cluster, random.Random, Load], None]
    times: int
    #: Seconds of load between two faults (uniform in the range).
    gap: tuple[float, float] = (1.0, 3.0)


SCENARIOS = {
    "agent SIGKILL": Scenario(faults.kill_agent, 4),
    "comfysim killed": Scenario(faults.kill_comfysim, 3),
    "rabbitmq stop/start": Scenario(faults.bounce_rabbitmq, 3, gap=(1.5, 3.0)),
    "redis restart, data gone": Scenario(faults.restart_redis, 4),
    "websockets dropped/silent": Scenario(faults.drop_websockets, 5),
    "poison job": Scenario(faults.submit_poison, 4, gap=(0.5, 2.0)),
}


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_chaos(name: str, cluster: Cluster, chaos_seed: int) -> None:
    scenario = SCENARIOS[name]
    rng = random.Random(f"{chaos_seed}:{name}")
    row = Row(name)
    TABLE.append(row)
    began = time.monotonic()
    load = Load(cluster, rng).start()
    affected: set[str] = set()
    try:
        time.sleep(rng.uniform(1.0, 2.0))  # the load builds up before the first fault
        for _ in range(scenario.times):
            affected.update(cluster.active_jobs())  # in flight when the fault hits
            scenario.fault(cluster, rng, load)
            row.faults += 1
            affected.update(cluster.active_jobs())  # and those it left behind
            time.sleep(rng.uniform(*scenario.gap))
    finally:
        load.stop()
        faults.ensure_servers_up(cluster.servers)
    stopped = time.monotonic()
    job_ids = load.job_ids
    ended = wait_terminal(cluster, job_ids, SETTLE_BOUND)
    row.settle_s = time.monotonic() - stopped

    def reservations_settled() -> bool:
        held, active = reservations_match(cluster)
        return held == active

    try:
        wait_for(reservations_settled, 5, "reservations == jobs holding a node")
    except AssertionError:
        held, active = reservations_match(cluster)
        row.problems.append(f"reservations {sorted(held)} but jobs holding a node {sorted(active)}")
    check(cluster, row, job_ids, ended, poison=load.poison)
    row.jobs = len(job_ids)
    row.refused = len(load.refused)
    row.affected = len((affected | load.poison) & set(job_ids))
    row.seconds = time.monotonic() - began

    assert not load.errors, load.errors[:5]
    # A submit may be refused while a server it needs is away (nothing is charged then:
    # ledger.verify), never because of what it asked for.
    assert {kind for kind, _ in load.refused} <= {"RegistryError", "BusError", "NodeUnavailable"}, load.refused[:5]
    assert row.jobs >= 10, f"the load submitted only {row.jobs} jobs; refused: {load.refused[:5]}"
    assert not row.problems, (
        f"{name} (CHAOS_SEED={chaos_seed}): " + "\n".join(row.problems[:20]) + "\n" + cluster.logs()
    )
    assert row.lost == 0 and row.twice == 0
