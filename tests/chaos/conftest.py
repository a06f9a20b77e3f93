"""Fixtures of the chaos suite: the seed, a fresh cluster per scenario, the table."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.db import Database

from .. import services
from ..conftest import empty_all_tables
from . import faults
from .checks import TABLE, format_table
from .cluster import Cluster, running_cluster

_SEED: list[int] = []


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    """``CHAOS_SEED`` if set, else a fresh one; printed with the table to reproduce a run."""
    if not _SEED:
        raw = os.environ.get("CHAOS_SEED", "").strip()
        _SEED.append(int(raw) if raw else random.SystemRandom().randrange(1, 10**6))
    return _SEED[0]


@pytest.fixture(scope="session", autouse=True)
def _servers_up_at_the_end() -> Iterator[None]:
    """Whatever happened in a scenario, leave the broker's app started and Redis running."""
    yield
    faults.ensure_servers_up()


def _require_tool(available: bool, what: str) -> None:
    if available:
        return
    if services.IN_CI:
        pytest.fail(f"{what} is needed by the chaos suite; CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not installed")


@pytest.fixture
def cluster(_postgres_db: Database, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh cluster: three nodes (comfysim + agent processes), the worker in-process."""
    services.require("RabbitMQ", "127.0.0.1", 5672)
    services.require("Redis", "127.0.0.1", 6379)
    _require_tool(faults.rabbit_available(), "rabbitmqctl")
    _require_tool(faults.redis_available(), "redis-server and redis-cli (with /var/lib/redis)")
    empty_all_tables(_postgres_db)
    with services.rabbit_bus() as bus, services.redis_registry() as registry:
        try:
            with running_cluster(_postgres_db, bus, registry, tmp_path) as c:
                yield c
        finally:
            faults.ensure_servers_up()  # before the bus deletes its queues


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TABLE:
        terminalreporter.write_sep("=", "chaos: faults injected, jobs affected, jobs lost")
        terminalreporter.write_line(format_table(TABLE, _SEED[0] if _SEED else 0))
