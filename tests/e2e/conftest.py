"""The ``stack`` fixture: the whole back end, embedded (SQLite, in-process ports) and
distributed (PostgreSQL, RabbitMQ, Redis), with two simulated nodes and their agents."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.db import Database
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry

from .. import services
from ..conftest import empty_all_tables
from .stack import Stack, running_stack


@contextlib.contextmanager
def ports(mode: str) -> Iterator[tuple]:  # type: ignore[type-arg]
    if mode == "embedded":
        bus, registry = MemoryBus(), MemoryRegistry()
        try:
            yield bus, registry
        finally:
            bus.close()
        return
    with services.rabbit_bus() as bus, services.redis_registry() as registry:
        yield bus, registry


@pytest.fixture(params=["embedded", "distributed"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def stack_db(mode: str, request: pytest.FixtureRequest) -> Database:
    db: Database = request.getfixturevalue("_sqlite_db" if mode == "embedded" else "_postgres_db")
    empty_all_tables(db)
    return db


@pytest.fixture
def stack(mode: str, stack_db: Database, tmp_path: Path) -> Iterator[Stack]:
    with ports(mode) as (bus, registry), running_stack(stack_db, bus, registry, tmp_path) as s:
        yield s
