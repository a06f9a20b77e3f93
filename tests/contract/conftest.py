"""Paired bus fixtures: every contract test runs on the in-process bus and on RabbitMQ.

Each RabbitMQ bus gets its own prefix, so parallel runs (and other engineers' runs on the
same broker) never share a queue, and what it declared is deleted at teardown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pytest

from backend.ports.bus import Bus
from backend.ports.memory_bus import MemoryBus
from backend.ports.rabbitmq import RabbitBus, Topology

from .. import services


def _delete(topology: Topology) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(services.AMQP_URL))
    try:
        channel = conn.channel()
        for name in sorted(topology.queues):
            channel.queue_delete(name)
        for name in sorted(topology.exchanges):
            channel.exchange_delete(name)
    finally:
        conn.close()


@contextmanager
def rabbit_bus(**options: Any) -> Iterator[RabbitBus]:
    services.require("RabbitMQ", "127.0.0.1", 5672)
    prefix = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # Short back-off: a test waits for reconnects, a production bus need not hurry.
    bus = RabbitBus(services.AMQP_URL, prefix=prefix, publish_timeout=10, max_reconnect_delay=0.5, **options)
    try:
        yield bus
    finally:
        bus.close()
        _delete(bus.topology)


@pytest.fixture(params=["memory", "rabbitmq"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        memory = MemoryBus()
        yield memory
        memory.close()
    else:
        with rabbit_bus() as rabbit:
            yield rabbit


@pytest.fixture
def rabbit() -> Iterator[RabbitBus]:
    with rabbit_bus() as bus:
        yield bus
