"""Fixtures for the studio.

- ``backend``: a backend on the shared ``db`` fixture (in-process bus and registry) for
  the sign-in, file-route and metrics tests through FastAPI's TestClient.
- ``studio_server``: the real entry point, ``python run_studio.py``, started as a
  subprocess on a free port with its data in a temporary directory, its built-in
  simulated ComfyUI node (comfysim) and that node's agent. Nothing of ours is replaced:
  the only stand-in is comfysim for ComfyUI, and tests inject failures and holds through
  the simulator's ``/sim/faults`` endpoint (``--sim-port`` fixes its address).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.assets.blobs import LocalBlobStore
from backend.assets.stores import open_blob_store
from backend.config import REPO_ROOT, Settings
from backend.db import Database
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.workflows import Library

from ..studio_process import StudioServer, start_studio, stop_studio

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

@pytest.fixture(scope="session")
def library() -> Library:
    return Library.load(REPO_ROOT / "workflows")


@pytest.fixture
def backend(db: Database, library: Library, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The backend of the pages' tests; ``parametrize("backend", ["s3"], indirect=True)``
    keeps its files in the session's Ceph RGW instead of a directory."""
    settings = Settings(data_dir=tmp_path, welcome_credits=100, login_backoff_seconds=600)
    if getattr(request, "param", "local") == "s3":
        from ..conftest import s3_settings

        s3 = s3_settings(request.getfixturevalue("rgw"), request.getfixturevalue("rgw_bucket"), data_dir=tmp_path)
        settings = dataclasses.replace(s3, welcome_credits=100, login_backoff_seconds=600)
        blobs = open_blob_store(settings)
    else:
        blobs = LocalBlobStore(tmp_path / "assets", durable=False)
    b = Backend(settings=settings, db=db, bus=MemoryBus(), registry=MemoryRegistry(), library=library, blobs=blobs)
    yield b
    b.bus.close()


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioServer]:
    root = tmp_path_factory.mktemp("run-studio")
    server = start_studio(root / "data", log_path=root / "studio.log")
    try:
        yield server
    finally:
        stop_studio(server)
