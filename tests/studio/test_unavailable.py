"""The studio while its database restarts (a private PostgreSQL this module stops): every
request answers 503 "try again in a moment" with ``Retry-After``, never a 500 with a
traceback, and the same session works again once the database is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.assets.blobs import LocalBlobStore
from backend.config import Settings
from backend.db import Database, migrate
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.workflows import Library
from tests.backend.helpers import CHEAP_HASHER, PASSWORD, make_user

from .. import private_servers
from ..private_servers import PrivatePostgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    private_servers.require("postgres")
    with private_servers.private_servers("postgres") as servers:
        assert servers.postgres is not None
        yield servers.postgres


@pytest.fixture
def client(postgres: PrivatePostgres, library: Library, tmp_path: Path) -> Iterator[TestClient]:
    from studio.app import create_app

    db = Database(postgres.url)
    migrate.upgrade(db)
    backend = Backend(settings=Settings(data_dir=tmp_path), db=db, bus=MemoryBus(), registry=MemoryRegistry(),
                      library=library, blobs=LocalBlobStore(tmp_path / "assets", durable=False))
    make_user(db, "uma")
    app = create_app(backend, wake=lambda: None, password_hasher=CHEAP_HASHER)
    try:
        with TestClient(app, follow_redirects=False) as c:
            yield c
    finally:
        if not postgres.accepts():
            postgres.start()
        backend.close()


def test_requests_during_a_database_restart_answer_try_again_later(client: TestClient, postgres: PrivatePostgres) -> None:
    r = client.post("/login", data={"name": "uma", "password": PASSWORD})
    assert r.status_code == 303
    assert client.get("/studio/").status_code == 200

    postgres.stop()
    try:
        stranger = TestClient(client.app, follow_redirects=False, cookies={"studio_session": "x" * 43})
        for who, method, path, data in [
            (client, "POST", "/login", {"name": "uma", "password": PASSWORD}),  # the sign-in itself
            (client, "GET", "/files/" + "a" * 64, None),  # the file route's ownership check
            (stranger, "GET", "/studio/history", None),  # a session not seen before: the page guard
            (stranger, "GET", "/studio/config", None),  # Gradio's own routes (its auth dependency)
        ]:
            r = who.request(method, path, data=data)
            assert r.status_code == 503, (path, r.status_code, r.text[:300])
            assert r.headers["retry-after"] == "5", path
            assert "try again in a moment" in r.text and "Traceback" not in r.text, path
    finally:
        postgres.start()

    r = client.get("/studio/")  # the same session, the pool reconnected unseen
    assert r.status_code == 200
