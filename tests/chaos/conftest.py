"""Fixtures of the chaos suite: the seed, private servers, a fresh cluster per scenario, the table.

The suite stops, restarts and empties its servers, so it never uses the machine's shared
ones: it starts its own PostgreSQL, Redis and RabbitMQ once per session
(``tests/private_servers.py``) and every scenario gets fresh bus and registry prefixes and
empty tables on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.db import Database, migrate
from backend.ports.rabbitmq import RabbitBus
from backend.ports.redis_registry import RedisRegistry

from .. import private_servers, s3server
from ..conftest import empty_all_tables, s3_settings
from ..private_servers import PrivateServers
from . import faults
from .checks import TABLE
from .cluster import Cluster, running_cluster
from .embedded import running_embedded

_SEED: list[int] = []


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    """``CHAOS_SEED`` if set, else a fresh one; printed with the table to reproduce a run."""
    if not _SEED:
        raw = os.environ.get("CHAOS_SEED", "").strip()
        _SEED.append(int(raw) if raw else random.SystemRandom().randrange(1, 10**6))
    return _SEED[0]


@pytest.fixture(scope="session")
def servers() -> Iterator[PrivateServers]:
    """PostgreSQL, Redis and RabbitMQ of the chaos suite alone, for the whole session."""
    private_servers.require("postgres", "redis", "rabbitmq")
    with private_servers.private_servers("postgres", "redis", "rabbitmq") as started:
        yield started


@pytest.fixture(scope="session")
def chaos_db(servers: PrivateServers) -> Iterator[Database]:
    assert servers.postgres is not None
    db = Database(servers.postgres.url)
    migrate.upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh cluster of the kind the scenario attacks (``Scenario.cluster``)."""
    from .test_chaos import SCENARIOS

    kind = SCENARIOS[request.node.callspec.params["name"]].cluster
    if kind == "embedded":
        with running_embedded(tmp_path / "studio-data") as embedded:
            yield embedded
        return
    servers: PrivateServers = request.getfixturevalue("servers")
    chaos_db: Database = request.getfixturevalue("chaos_db")
    with contextlib.ExitStack() as stack:
        if kind == "small disk":
            stack.enter_context(private_servers.small_disk(tmp_path / "assets"))
        rgw = request.getfixturevalue("chaos_rgw") if kind == "s3" else None
        yield stack.enter_context(_distributed(servers, chaos_db, tmp_path, proxied=kind == "proxied", rgw=rgw))


@pytest.fixture(scope="session")
def chaos_rgw(rgw: s3server.RGW) -> s3server.RGW:
    """The session's private Ceph RGW (tests/s3server.py): the scenario stops and starts
    its gateway and always leaves it running, in a bucket of its own."""
    return rgw


@contextlib.contextmanager
def _distributed(servers: PrivateServers, chaos_db: Database, tmp_path: Path, *, proxied: bool,
                 rgw: s3server.RGW | None = None) -> Iterator[Cluster]:
    """Three nodes (comfysim + agent processes), the worker in-process, on the private servers."""
    assert servers.rabbitmq is not None and servers.redis is not None
    faults.ensure_servers_up(servers)  # whatever the scenario before did
    empty_all_tables(chaos_db)
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    # Short back-off: the faults are brief, and the test waits for the reconnects.
    bus = RabbitBus(servers.rabbitmq.url, prefix=name, publish_timeout=10, max_reconnect_delay=0.5)
    registry = RedisRegistry(servers.redis.url, prefix=name)
    try:
        s3 = agent_s3 = None
        if rgw is not None:
            if not rgw.answers():
                rgw.start_gateway()
            bucket = rgw.new_bucket("chaos")
            rgw.allow_agent_writes(bucket)
            s3 = s3_settings(rgw, bucket)
            agent_s3 = dataclasses.replace(s3, s3_access_key=rgw.agent_access_key, s3_secret_key=rgw.agent_secret_key)
        with running_cluster(chaos_db, bus, registry, tmp_path, servers, proxied=proxied, rgw=rgw, s3=s3,
                             agent_s3=agent_s3) as c:
            yield c
    finally:
        faults.ensure_servers_up(servers)  # so the bus and registry close cleanly
        bus.close()
        registry.close()



@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Each scenario's report carries its row of the table: under pytest-xdist the scenarios
    run in worker processes, and only reports reach the process that prints the summary
    (``tests/conftest.py`` prints the table from them)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and item.name.startswith("test_chaos[") and TABLE:
        report.user_properties.append(("chaos_row", (dataclasses.asdict(TABLE[-1]), _SEED[0] if _SEED else 0)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    private_servers.report(terminalreporter)
