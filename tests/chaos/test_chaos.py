"""The chaos suite: under a steady load of jobs, each fault is repeated at random points,
then every job must end once, nothing may be lost or run twice, no output of a job that
ran may be lost, and the books, the reservations and the users' events must agree (see
``checks.py``).

Run it alone with ``.venv/bin/python -m pytest tests/chaos -s``; ``CHAOS_SEED=N``
repeats the fault timing of an earlier run (the seed is printed with the table), and
``CHAOS_REPEAT=N`` runs every selected scenario N times in one session (to hunt a flake:
``CHAOS_REPEAT=50 pytest tests/chaos -k rabbitmq``).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from backend.errors import Unavailable

from . import embedded, faults
from .checks import TABLE, Row, check, settle_reservations, wait_terminal
from .cluster import Load, wait_for

#: Longest the jobs may take to end once the load stops and the last fault healed.
SETTLE_BOUND = 45.0
#: Fewest jobs a scenario's load submits (some before, between or after the faults).
MIN_JOBS = 10


@dataclass(frozen=True)
class Scenario:
    fault: Callable[[Any, random.Random, Load], None]
    times: int
    #: Seconds of load between two faults (uniform in the range).
    gap: tuple[float, float] = (1.0, 3.0)
    #: The cluster it attacks: "distributed" (the worker in the test process, agents and
    #: comfysims as processes, on the private servers), "proxied" (the same, each agent
    #: reaching the servers through a proxy that can cut it off), "small disk" (the asset
    #: store on a small disk of its own), "s3" (the assets in a bucket of a private Ceph
    #: RGW, agents with a write-only key and no shared directory), or "embedded"
    #: (run_studio.py as a process).
    cluster: str = "distributed"
    #: How a job whose prompt ran to success may still fail under this fault (its output
    #: could not be fetched or kept); any other failure of such a job is a lost output.
    excused: frozenset[str] = frozenset()
    settle: float = SETTLE_BOUND


SCENARIOS = {
    "agent SIGKILL": Scenario(faults.kill_agent, 4),
    "comfysim killed": Scenario(faults.kill_comfysim, 3, excused=frozenset({"Lost", "NodeLost"})),
    "rabbitmq stop/start": Scenario(faults.bounce_rabbitmq, 3, gap=(1.5, 3.0)),
    "redis restart, data gone": Scenario(faults.restart_redis, 4),
    "websockets dropped/silent": Scenario(faults.drop_websockets, 5),
    "poison job": Scenario(faults.submit_poison, 4, gap=(0.5, 2.0)),
    "postgresql stop/start": Scenario(faults.bounce_postgres, 3, gap=(1.5, 3.0)),
    "postgresql away 20-30 s": Scenario(faults.long_postgres_outage, 1, gap=(8.0, 10.0), settle=60.0),
    "agent partitioned > TTL": Scenario(faults.partition_agent, 2, cluster="proxied", settle=60.0),
    "asset store disk full": Scenario(faults.fill_asset_store, 3, gap=(2.0, 4.0), cluster="small disk",
                                      excused=frozenset({"OutputNotStored"})),
    "object store stopped and started": Scenario(faults.stop_object_store, 3, gap=(2.0, 4.0), cluster="s3"),
    "embedded studio SIGKILL": Scenario(embedded.kill_studio, 2, gap=(3.0, 6.0), cluster="embedded", settle=120.0),
}

#: How often each scenario runs in this session (``CHAOS_REPEAT``).
REPEAT = max(1, int(os.environ.get("CHAOS_REPEAT", "1")))

#: Why a submit may be refused under chaos (a server it needs is away); nothing is
#: charged then (ledger.verify), and it is never because of what it asked for.
REFUSALS = {"RegistryError", "BusError", "NodeUnavailable", "DatabaseUnavailable"}


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in SCENARIOS for _ in range(REPEAT)])
def test_chaos(name: str, cluster: Any, chaos_seed: int) -> None:
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
            affected.update(_active_jobs_when_back(cluster))  # and those it left behind
            time.sleep(rng.uniform(*scenario.gap))
        # A busy machine leaves the load little time between long faults: it goes on until
        # it has submitted enough jobs for the checks to mean something.
        wait_for(lambda: len(load.job_ids) >= MIN_JOBS, 120, f"the load to submit {MIN_JOBS} jobs")
    finally:
        load.stop()
        if scenario.cluster != "embedded":
            faults.ensure_servers_up(cluster.servers)
    stopped = time.monotonic()
    job_ids = load.job_ids
    ended = wait_terminal(cluster.db, job_ids, scenario.settle)
    row.settle_s = time.monotonic() - stopped

    settle_reservations(cluster, row, wait_for)
    check(cluster, row, job_ids, ended, poison=load.poison, excused=scenario.excused)
    row.jobs = len(job_ids)
    row.refused = len(load.refused)
    row.affected = len((affected | load.poison) & set(job_ids))
    row.seconds = time.monotonic() - began

    assert not load.errors, load.errors[:5]
    assert {kind for kind, _ in load.refused} <= REFUSALS, load.refused[:5]
    assert row.jobs >= MIN_JOBS, f"the load submitted only {row.jobs} jobs; refused: {load.refused[:5]}"
    assert not row.problems, (
        f"{name} (CHAOS_SEED={chaos_seed}): " + "\n".join(row.problems[:20]) + "\n" + cluster.logs()
    )
    assert row.lost == 0 and row.twice == 0 and row.outputs_lost == 0


def _active_jobs_when_back(cluster: Any) -> list[str]:
    """The jobs not ended yet, read once the database answers again."""
    found: list[str] = []

    def answered() -> bool:
        try:
            found[:] = cluster.active_jobs()
        except Unavailable:
            return False
        return True

    wait_for(answered, 60, "the database answering again")
    return found
