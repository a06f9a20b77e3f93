"""A webhook attempt connects to the address it checked, never to one DNS gives later:
the deliverer's resolver is injected (it stands in for DNS, not for any part of ours),
the receiver is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from backend import jobs
from backend.config import Settings
from backend.db import Database
from backend.jobs import webhooks

from .helpers import charged_job, make_user

#: A public address (TEST-NET ranges are not global) that nothing in the tests answers on.
PUBLIC = "192.88.99.1"


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _ended_job_with_hook(db: Database, url: str) -> str:
    user = make_user(db, "hooked", credits=10)
    job = charged_job(db, user, 1)
    jobs.cancel(db, job.id, by_user=user.id)
    with db.write() as s:
        webhooks.attach(s, job.id, url)
    return job.id


def test_a_name_that_rebinds_to_loopback_never_reaches_it(db: Database, receiver: Receiver) -> None:
    # "localhost" is what the system's DNS would give at connect time: 127.0.0.1, the receiver.
    answers = [[PUBLIC], ["127.0.0.1"]]
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers.pop(0) if answers else ["127.0.0.1"]

    settings = Settings(webhook_secret="s", webhook_timeout_seconds=1.0, webhook_retry_seconds=1.0)
    job_id = _ended_job_with_hook(db, f"http://localhost:{receiver.port}/hook")
    deliverer = webhooks.Deliverer(db, settings, resolve=rebinding)
    now = dt.datetime.now(dt.timezone.utc)
    assert deliverer.run_once(now) == 1  # checked the public answer, connected to it: no answer there
    first = webhooks.attempts(db, job_id)
    assert first[-1].status is None and first[-1].error, first
    assert deliverer.run_once(now + dt.timedelta(seconds=5)) == 1  # the next answer is loopback: refused
    assert webhooks.attempts(db, job_id)[-1].error.startswith("The webhook host localhost is a private")  # type: ignore[union-attr]
    assert webhooks.webhook_of(db, job_id) == (f"http://localhost:{receiver.port}/hook", "gave_up")
    assert receiver.received == [], "the loopback receiver was never reached"
    assert asked == ["localhost", "localhost"], "one resolution per attempt"


def test_the_pinned_address_is_reached_with_the_name_as_host(db: Database, receiver: Receiver) -> None:
    settings = Settings(webhook_secret="s", webhook_allow_networks=("127.0.0.1/32",))
    url = f"http://hooks.invalid:{receiver.port}/hook?x=1"  # .invalid: no real DNS answers for it
    job_id = _ended_job_with_hook(db, url)
    deliverer = webhooks.Deliverer(db, settings, resolve=lambda host, port: ["127.0.0.1"])
    assert deliverer.run_once() == 1
    assert webhooks.webhook_of(db, job_id) == (url, "delivered")
    (headers,) = receiver.received
    assert headers["Host"] == f"hooks.invalid:{receiver.port}" and headers["X-Studio-Job"] == job_id


def test_over_https_the_name_is_the_tls_server_name(tmp_path: Path) -> None:
    """Connecting to the pinned address, the TLS handshake still names the host (SNI)
    and the certificate is checked against it: a self-signed one is refused."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=hooks.invalid"], check=True, capture_output=True)
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)  # type: ignore[assignment]
    listener = socket.create_server(("127.0.0.1", 0))

    def handshake() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(conn, server_side=True):
            pass

    thread = threading.Thread(target=handshake, daemon=True)
    thread.start()
    target = webhooks.pin(Settings(webhook_secret="s", webhook_allow_networks=("127.0.0.1/32",)),
                          f"https://hooks.invalid:{listener.getsockname()[1]}/h", resolve=lambda host, port: ["127.0.0.1"])
    try:
        with pytest.raises(urllib3.exceptions.SSLError, match="certificate verify failed"):
            webhooks.post(target, b"{}", {}, timeout=5)
    finally:
        thread.join(10)
        listener.close()
    assert server_names == ["hooks.invalid"]
