"""Paired bus fixtures: every contract test runs on the in-process bus and on RabbitMQ.

Each RabbitMQ bus gets its own prefix, so parallel runs (and other engineers' runs on the
same broker) never share a queue, and what it declared is deleted at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backend.ports.bus import Bus
from backend.ports.memory_bus import MemoryBus
from backend.ports.rabbitmq import RabbitBus

from .. import private_servers, services


@pytest.fixture(params=["memory", "rabbitmq"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        memory = MemoryBus()
        yield memory
        memory.close()
    else:
        with services.rabbit_bus() as rabbit:
            yield rabbit


@pytest.fixture
def rabbit() -> Iterator[RabbitBus]:
    with services.rabbit_bus() as bus:
        yield bus


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    private_servers.report(terminalreporter)
