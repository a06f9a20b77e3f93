"""503 while the database or every node is away, in the one error shape with
``Retry-After`` (the app in process: a studio cannot be started without its database,
and the embedded one always has its simulated node)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend import accounts
from backend.accounts import tokens
from backend.assets.blobs import LocalBlobStore as BlobStore
from backend.config import REPO_ROOT, Settings
from backend.db import Database, migrate
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.workflows import Library
from studio.app import create_app
from tests.backend.helpers import CHEAP_HASHER, PASSWORD
from tests.services import free_port

from .conftest import png_bytes


def client_for(db: Database, tmp_path: Path) -> TestClient:
    backend = Backend(settings=Settings(data_dir=tmp_path), db=db, bus=MemoryBus(), registry=MemoryRegistry(),
                      library=Library.load(REPO_ROOT / "workflows"), blobs=BlobStore(tmp_path / "assets", durable=False))
    return TestClient(create_app(backend, wake=lambda: None))


@pytest.fixture
def no_nodes(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    db = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    migrate.upgrade(db)
    user = accounts.create_user(db, "nobody", PASSWORD, welcome_credits=100, hasher=CHEAP_HASHER)
    secret, _ = tokens.create(db, user.id, "t")
    yield client_for(db, tmp_path), secret
    db.dispose()


def test_503_when_no_node_can_run_it(no_nodes: tuple[TestClient, str]) -> None:
    client, secret = no_nodes
    auth = {"Authorization": f"Bearer {secret}"}
    asset = client.post("/api/v1/assets", headers=auth, files={"file": ("a.png", png_bytes(), "image/png")}).json()["asset_id"]
    for r in (client.post("/api/v1/quote", headers=auth, json={"workflow": "invert-scale", "params": {"image": asset}}),
              client.post("/api/v1/jobs", headers=auth, json={"workflow": "invert-scale", "params": {"image": asset}})):
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_node", r.text
        assert int(r.headers["Retry-After"]) > 0
    assert client.get("/api/v1/balance", headers=auth).json()["balance"] == 100, "nothing charged"


def test_503_while_the_database_is_away(tmp_path: Path) -> None:
    db = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2")  # nothing listens
    client = client_for(db, tmp_path)
    r = client.get("/api/v1/balance", headers={"Authorization": "Bearer sk_" + "a" * 40})
    assert r.status_code == 503, r.text
    body = r.json()["error"]
    assert body["code"] == "unavailable" and body["message_zh"] and int(r.headers["Retry-After"]) > 0
    db.dispose()
