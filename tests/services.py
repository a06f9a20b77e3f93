"""Where the test suite finds the real servers, and how it reacts when one is missing.

Locally a missing server or tool skips its tests with the reason shown; in CI
(``CI=true``) every skip — these, ``pytest.importorskip``, a bare ``pytest.skip``, a
``skipif`` mark — is turned into a failure by tests/conftest.py, because a green CI must
mean every test ran.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("STUDIO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("STUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("STUDIO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

IN_CI = os.environ.get("CI", "").lower() == "true"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: Ports are chosen below the kernel's ephemeral range (``ip_local_port_range``). A port
#: the kernel picks (``bind(0)``) comes from that range, and so does the source port of
#: every outgoing connection: between the pick and the server's own bind, another test
#: process's connection may take it (seen with three xdist workers: "cannot bind comfysim
#: to 127.0.0.1:45192: Address already in use"), and a server restarted on such a port can
#: find it taken — a client retrying to connect to it may even connect to itself (TCP
#: simultaneous open); RabbitMQ's ``start_app`` failed so with ``eaddrinuse``. Below the
#: range only another test's explicit pick can collide, and the pick is random.
_PORTS = range(20000, 32000)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range (see :data:`_PORTS`): the
    one helper the tests and the benchmarks use to start servers."""
    top = min(_PORTS.stop, _ephemeral_low())
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(_PORTS.start, top)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {_PORTS.start} and {top}")


def require(name: str, host: str, port: int) -> None:
    """Skip (locally; a failure in CI) unless ``host:port`` accepts connections."""
    if not port_open(host, port):
        pytest.skip(f"{name} is not reachable on {host}:{port}")


def require_tool(name: str) -> str:
    """The path of the command ``name``; skip (locally; a failure in CI) without it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed here")
    return path


# ---- real adapters with private names, cleaned up afterwards ------------------------------

import contextlib  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402


def unique_prefix(kind: str) -> str:
    """A name prefix no other test (or other engineer's run on the same server) uses."""
    return f"test-{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def delete_rabbit_topology(topology: Any) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = conn.channel()
        for name in sorted(topology.queues):
            channel.queue_delete(name)
        for name in sorted(topology.exchanges):
            channel.exchange_delete(name)
    finally:
        conn.close()


@contextlib.contextmanager
def rabbit_bus(**options: Any) -> Iterator[Any]:
    """A RabbitBus under its own prefix; what it declared is deleted afterwards."""
    from backend.ports.rabbitmq import RabbitBus

    require("RabbitMQ", "127.0.0.1", 5672)
    # Short back-off: a test waits for reconnects, a production bus need not hurry.
    options = {"publish_timeout": 10, "max_reconnect_delay": 0.5, **options}
    bus = RabbitBus(AMQP_URL, prefix=unique_prefix("bus"), **options)
    try:
        yield bus
    finally:
        bus.close()
        delete_rabbit_topology(bus.topology)


def delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        # The layout puts every key under "{prefix}:".
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def redis_registry() -> Iterator[Any]:
    """A RedisRegistry under its own prefix; its keys are deleted afterwards."""
    from backend.ports.redis_registry import RedisRegistry

    require("Redis", "127.0.0.1", 6379)
    prefix = unique_prefix("registry")
    registry = RedisRegistry(REDIS_URL, prefix=prefix)
    try:
        yield registry
    finally:
        registry.close()
        delete_redis_keys(prefix)
