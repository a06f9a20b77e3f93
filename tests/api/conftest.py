"""The API against a running studio: ``run_studio.py`` in a subprocess (one per mode and
test session), driven over HTTP with ``requests``.

- ``embedded``: SQLite, in-process bus and registry, the built-in simulated node;
- ``distributed``: PostgreSQL (a private schema), RabbitMQ and Redis (private prefixes),
  the simulated node's agent on the real bus.

Users and tokens are made in the studio's own database, as the CLI would; everything
else goes through the API. Webhooks are sent to :class:`Receiver`, a local HTTP server
whose answers a test chooses (the studio allows 127.0.0.0/8 for it).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from sqlalchemy import text

from backend import accounts
from backend.accounts import ledger, tokens
from backend.db import Database
from tests import services
from tests.backend.helpers import CHEAP_HASHER, PASSWORD
from tests.studio_process import StudioServer, start_studio, stop_studio

WEBHOOK_SECRET = "test webhook secret"
MAX_UPLOAD = 300_000
TIMEOUT = 30


def png_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Api:
    """A client of one studio's API with one token."""

    url: str
    token: str
    name: str = ""

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return requests.request(method, self.url + "/api" + path, headers=headers, timeout=kw.pop("timeout", TIMEOUT), **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def upload(self, data: bytes | None = None) -> str:
        r = self.post("/v1/assets", files={"file": ("in.png", data or png_bytes(), "image/png")})
        assert r.status_code == 201, r.text
        return r.json()["asset_id"]

    def submit(self, body: dict[str, Any], key: str | None = None) -> requests.Response:
        return self.post("/v1/jobs", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex})


Message = tuple[int | None, str, dict[str, Any]]


class Stream:
    """One open event stream, read message by message."""

    def __init__(self, api: Api, job_id: str, last_event_id: int | None = None) -> None:
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        self.response = api.get(f"/v1/jobs/{job_id}/events", stream=True, timeout=120, headers=headers)
        assert self.response.status_code == 200, self.response.text
        self.messages = self._messages()

    def _messages(self) -> Iterator[Message]:
        event_id, kind = None, None
        for line in self.response.iter_lines(chunk_size=1, decode_unicode=True):
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                yield event_id, kind, json.loads(line[6:])
            elif not line:
                event_id, kind = None, None

    def until(self, done: Any) -> list[Message]:
        """Messages up to the first for which ``done`` is true (the stream must not end first)."""
        seen = []
        for message in self.messages:
            seen.append(message)
            if done(message, seen):
                return seen
            assert message[1] != "end", f"the stream ended first: {seen}"
        raise AssertionError(f"the stream closed first: {seen}")

    def close(self) -> None:
        self.response.close()


def fill_slots(api: Api, asset: str) -> tuple[list[dict[str, Any]], requests.Response]:
    """Submit jobs (that the simulator holds with ``hang_in_node``) until every slot is
    taken; the jobs on the node, and the first refusal (409 busy)."""
    from tests.waiting import wait_for

    running: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while len(running) < 10:
        r = api.submit({"workflow": "invert-scale", "params": {"image": asset}})
        if r.status_code == 409 and not running and time.monotonic() < deadline:
            time.sleep(0.5)  # an earlier test's jobs still hold the slots: wait for them to end
            continue
        if r.status_code == 409:
            return running, r
        assert r.status_code == 201, r.text
        running.append(r.json())
        wait_for(lambda: api.get(f"/v1/jobs/{running[-1]['id']}").json()["state"] != "queued", 60, "the job on the node")
    raise AssertionError("the node never got busy")


@dataclass
class Studio:
    server: StudioServer
    db: Database
    mode: str

    @property
    def url(self) -> str:
        return self.server.url

    def user(self, credits: int = 1000, *, role: str = "creator", scope: str = "jobs") -> Api:
        name = f"u{uuid.uuid4().hex[:10]}"
        user = accounts.create_user(self.db, name, PASSWORD, role=role, welcome_credits=credits, hasher=CHEAP_HASHER)
        secret, _ = tokens.create(self.db, user.id, "tests", scope=scope)
        return Api(self.url, secret, name)

    def token(self, api: Api, scope: str) -> Api:
        """Another token of the same user as ``api``."""
        who = tokens.resolve(self.db, api.token)
        secret, _ = tokens.create(self.db, who.user_id, f"tests {scope}", scope=scope)
        return Api(self.url, secret, who.name)

    def check_books(self) -> None:
        assert ledger.verify(self.db) == []


@dataclass
class Receiver:
    """A webhook target on 127.0.0.1: records each POST, answers ``statuses`` in turn
    (then 200); a status of 0 answers nothing for longer than the studio waits."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> http.server.ThreadingHTTPServer:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received.append((dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 0:
                    time.sleep(float(STUDIO_ENV["STUDIO_WEBHOOK_TIMEOUT_SECONDS"]) + 1)
                    status = 200  # too late: the studio has counted a timeout
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


STUDIO_ENV = {
    "STUDIO_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "STUDIO_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    "STUDIO_WEBHOOK_RETRY_SECONDS": "0.5",
    "STUDIO_WEBHOOK_TIMEOUT_SECONDS": "2",
    "STUDIO_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
}


@contextlib.contextmanager
def _embedded(root: Any) -> Iterator[Studio]:
    server = start_studio(root / "data", log_path=root / "studio.log", env=STUDIO_ENV)
    db = Database(f"sqlite:///{(root / 'data' / 'studio.db').resolve()}")
    try:
        yield Studio(server, db, "embedded")
    finally:
        stop_studio(server)
        db.dispose()


@contextlib.contextmanager
def _distributed(root: Any) -> Iterator[Studio]:
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379), ("RabbitMQ", 5672)):
        services.require(name, "127.0.0.1", port)
    schema = f"studio_api_{uuid.uuid4().hex[:8]}"
    admin = Database(services.POSTGRES_URL)
    with admin.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in services.POSTGRES_URL else "?"
    url = f"{services.POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    bus_prefix, registry_prefix = services.unique_prefix("apibus"), services.unique_prefix("apireg")
    env = {**STUDIO_ENV, "STUDIO_DATABASE_URL": url, "STUDIO_AMQP_URL": services.AMQP_URL,
           "STUDIO_REDIS_URL": services.REDIS_URL, "STUDIO_BUS_PREFIX": bus_prefix,
           "STUDIO_REGISTRY_PREFIX": registry_prefix}
    db = Database(url)
    try:
        server = start_studio(root / "data", log_path=root / "studio.log", env=env)
        try:
            yield Studio(server, db, "distributed")
        finally:
            stop_studio(server)
    finally:
        db.dispose()
        with admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
        services.delete_redis_keys(registry_prefix)
        _delete_bus(bus_prefix)


def _delete_bus(prefix: str) -> None:
    import pika

    with contextlib.suppress(Exception):
        conn = pika.BlockingConnection(pika.URLParameters(services.AMQP_URL))
        try:
            channel = conn.channel()
            for name in (f"{prefix}.jobs.sim-1", f"{prefix}.lifecycle", f"{prefix}.dead-letters"):
                channel.queue_delete(name)
            for name in (f"{prefix}.user-events", f"{prefix}.dead-letters"):
                channel.exchange_delete(name)
        finally:
            conn.close()


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with _embedded(tmp_path_factory.mktemp("api-embedded")) as studio:
        yield studio


@pytest.fixture(scope="session")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with _distributed(tmp_path_factory.mktemp("api-distributed")) as studio:
        yield studio


@pytest.fixture(params=["embedded", "distributed"])
def studio(request: pytest.FixtureRequest) -> Studio:
    return request.getfixturevalue(request.param)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")  # one Playwright at a time: tests/studio's browsers start theirs
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    server = r.serve()
    yield r
    server.shutdown()
    server.server_close()
