"""Fixtures for the comfysim tests: simulators on free ports and websocket sessions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from comfysim import DEMO_MODELS, SimConfig, SimHandle, start_sim

from .helpers import WsClient, is_type


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    """A fresh node configured like a new ComfyUI install (no models)."""
    handle = start_sim(SimConfig())
    yield handle
    handle.stop()


@pytest.fixture
def demo_sim() -> Iterator[SimHandle]:
    """A node with the demo model files, fast steps."""
    handle = start_sim(SimConfig(models={k: list(v) for k, v in DEMO_MODELS.items()}, step_seconds=0.005))
    yield handle
    handle.stop()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimHandle]]:
    handles: list[SimHandle] = []

    def make(**fields: Any) -> SimHandle:
        handle = start_sim(SimConfig(**fields))
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def ws_factory() -> Iterator[Callable[..., WsClient]]:
    clients: list[WsClient] = []

    def make(url: str, client_id: str | None = None, **kwargs: Any) -> WsClient:
        client = WsClient(url, client_id, **kwargs)
        first = client.recv()
        assert is_type(first, "status")
        client.sid = first["data"]["sid"]  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
