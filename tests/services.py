"""Where the test suite finds the real servers, and how it reacts when one is missing.

Locally a missing server skips its tests with the reason shown; in CI (``CI=true``) the
same situation fails the run, because a green CI must mean the real servers were used.
"""

from __future__ import annotations

import os
import socket

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


def require(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) unless ``host:port`` accepts connections."""
    if port_open(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires every real server", pytrace=False)
    pytest.skip(reason)
