"""A running studio to attack, and attackers: self-registered users driving raw HTTP and
Gradio's queue protocol (``gradio_protocol``), never the page.

The studio is ``run_studio.py`` itself, started by ``tests.studio_process.start_studio``
(its own data directory, the built-in simulated node). It believes ``X-Forwarded-For``
from 127.0.0.1 (``STUDIO_TRUSTED_PROXIES``), so each test client can pose as a client at
its own address, as behind a real reverse proxy; its per-address limits are the shipped
defaults. When the module is done, ``python -m backend ledger verify`` must pass on the
studio's database.
"""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image
from sqlalchemy import func, select

from backend.config import REPO_ROOT
from backend.db import Database
from backend.db.models import Asset, AssetOwner, Job, LedgerEntry, User
# ``backend`` and ``library``: the studio tests' in-process fixtures, for tests that choose
# the client's address themselves (FastAPI's TestClient).
from tests.studio.conftest import backend, library  # noqa: F401
from tests.studio_process import StudioServer, start_studio, stop_studio

from .gradio_protocol import Attacker

PASSWORD = "a long and boring passphrase"
_addresses = itertools.count(1)


def fresh_address() -> str:
    """A documentation-range address no other client of the suite uses."""
    n = next(_addresses)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StudioServer]:
    root = tmp_path_factory.mktemp("attacked-studio")
    server = start_studio(root / "data", log_path=root / "studio.log",
                          env={"STUDIO_TRUSTED_PROXIES": "127.0.0.1", "STUDIO_SIGNUPS_PER_ADDRESS": "5",
                               # a backoff no test outlives: exact counts, however loaded the machine
                               "STUDIO_LOGIN_BACKOFF_SECONDS": "600"})
    try:
        yield server
        verify_books(server)
    finally:
        stop_studio(server)


def verify_books(server: StudioServer) -> None:
    """``python -m backend ledger verify`` on the studio's own database must pass."""
    env = dict(os.environ, STUDIO_DATA_DIR=str(server.data_dir))
    env.pop("STUDIO_DATABASE_URL", None)
    env.pop("STUDIO_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "backend", "ledger", "verify"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Client:
    """A browser-less client at its own address, signed in or not."""

    server: StudioServer
    http: requests.Session
    address: str
    name: str = ""

    @property
    def url(self) -> str:
        return self.server.url

    def protocol(self) -> Attacker:
        return Attacker(self.server.url, self.http)


def client(server: StudioServer, address: str | None = None) -> Client:
    http = requests.Session()
    http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
    address = address or fresh_address()
    http.headers["X-Forwarded-For"] = address
    return Client(server=server, http=http, address=address)


def sign_up(server: StudioServer, name: str | None = None, *, address: str | None = None) -> Client:
    """A freshly self-registered user (100 welcome credits)."""
    c = client(server, address)
    c.name = name or f"u{uuid.uuid4().hex[:10]}"
    r = c.http.post(server.url + "/signup", data={"name": c.name, "password": PASSWORD, "password2": PASSWORD},
                    allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text[:500]
    return c


@pytest.fixture
def attacker(studio: StudioServer) -> Client:
    return sign_up(studio)


@pytest.fixture
def victim(studio: StudioServer) -> Client:
    return sign_up(studio)


@dataclass(frozen=True)
class Footprint:
    """What the database holds for one user: anything an attack must not change."""

    assets: int
    ledger: int
    jobs: int
    balance: int


def database(server: StudioServer) -> Database:
    return Database(f"sqlite:///{(server.data_dir / 'studio.db').resolve()}")


def footprint(server: StudioServer, name: str) -> Footprint:
    db = database(server)
    try:
        with db.read() as s:
            user = s.scalar(select(User).where(User.name == name))
            assert user is not None
            count = lambda model, column: s.scalar(select(func.count()).select_from(model).where(column == user.id))  # noqa: E731
            return Footprint(assets=count(AssetOwner, AssetOwner.user_id), ledger=count(LedgerEntry, LedgerEntry.user_id),
                             jobs=count(Job, Job.user_id), balance=user.balance)
    finally:
        db.dispose()


def owned_assets(server: StudioServer, name: str) -> set[str]:
    db = database(server)
    try:
        with db.read() as s:
            user_id = s.scalar(select(User.id).where(User.name == name))
            return set(s.scalars(select(AssetOwner.asset_id).where(AssetOwner.user_id == user_id)))
    finally:
        db.dispose()


def all_assets(server: StudioServer) -> set[str]:
    db = database(server)
    try:
        with db.read() as s:
            return set(s.scalars(select(Asset.id)))
    finally:
        db.dispose()


def blob_path(server: StudioServer, sha256: str) -> Path:
    """Where the asset store keeps a blob (found, not assumed)."""
    found = [p for p in (server.data_dir / "assets").rglob(sha256 + "*") if p.is_file()]
    assert found, sha256
    return found[0]


#: What no answer to an attacker may contain: server paths and library texts.
LEAKS = ("/etc/", "/proc/", "/tmp/", "studio.db", "gradio/sessions", "Traceback", "cannot identify",
         "Could not preprocess", "InvalidPathError", "UnidentifiedImageError", "PIL.", "site-packages")


def assert_no_leak(text: str, *extra: str) -> None:
    for fragment in (*LEAKS, *extra):
        assert fragment not in text, f"{fragment!r} leaked in: {text[:600]}"
