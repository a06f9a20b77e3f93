"""Proxy headers are believed from ``trusted_proxies`` only; the session cookie is Secure
behind TLS; the upload guard Gradio's ``launch()`` sets up is on for the mounted app.
In-process (FastAPI's TestClient lets a test choose the peer's address)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from backend.accounts import throttle
from backend.config import Settings
from backend.errors import ConfigError
from backend.runtime import Backend
from backend.accounts.signin import name_address_limit
from tests.backend.helpers import CHEAP_HASHER, PASSWORD, make_user

PROXY, CLIENT = "10.0.0.5", "203.0.113.77"


def app_client(backend: Backend, peer: str, **settings: object) -> TestClient:
    from studio.app import create_app

    settings = {"login_backoff_seconds": 600, **settings}  # no test outlives the first wait
    configured = dataclasses.replace(backend, settings=dataclasses.replace(backend.settings, **settings))
    return TestClient(create_app(configured, wake=lambda: None, password_hasher=CHEAP_HASHER),
                      client=(peer, 40000), follow_redirects=False)


@pytest.fixture
def user(backend: Backend) -> str:
    make_user(backend.db, "walt")
    return "walt"


def sign_in(c: TestClient, **headers: str) -> str:
    r = c.post("/login", data={"name": "walt", "password": PASSWORD}, headers=headers)
    assert r.status_code == 303, r.text
    return r.headers["set-cookie"]


def secure(cookie: str) -> bool:
    return re.search(r";\s*secure", cookie, re.IGNORECASE) is not None


def test_a_trusted_proxy_tells_the_scheme_and_the_client(backend: Backend, user: str) -> None:
    with app_client(backend, PROXY, trusted_proxies=("10.0.0.0/8",)) as c:
        assert secure(sign_in(c, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": CLIENT}))
        assert not secure(sign_in(c))
        for _ in range(5):  # wrong passwords are counted against the client's address, not the proxy's
            c.post("/login", data={"name": "walt", "password": "wrong one"}, headers={"X-Forwarded-For": CLIENT})
        blocked = c.post("/login", data={"name": "walt", "password": PASSWORD}, headers={"X-Forwarded-For": CLIENT})
        assert blocked.status_code == 429
        assert c.post("/login", data={"name": "walt", "password": PASSWORD},
                      headers={"X-Forwarded-For": "203.0.113.78"}).status_code == 303


def test_anyone_else_cannot_claim_to_be_a_proxy(backend: Backend, user: str) -> None:
    with app_client(backend, CLIENT, trusted_proxies=("10.0.0.0/8",)) as c:
        assert not secure(sign_in(c, **{"X-Forwarded-Proto": "https"}))
        for i in range(5):  # a fresh X-Forwarded-For per guess changes nothing
            c.post("/login", data={"name": "walt", "password": "wrong one"}, headers={"X-Forwarded-For": f"192.0.2.{i}"})
        # Every guess was counted against the real peer, none against a claimed address
        # (read from the table: the backoff's first wait is 1 s, too short to race).
        assert throttle.count(backend.db, f"login:name-addr:walt|{CLIENT}", name_address_limit(backend.settings)) == 5
        assert all(throttle.count(backend.db, f"login:name-addr:walt|192.0.2.{i}", name_address_limit(backend.settings)) == 0 for i in range(5))
    with app_client(backend, PROXY) as c:  # no trusted proxies at all
        assert not secure(sign_in(c, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.200"}))


def test_secure_cookies_setting_marks_the_cookie_always(backend: Backend, user: str) -> None:
    with app_client(backend, PROXY, secure_cookies=True) as c:
        assert secure(sign_in(c))


def test_metrics_through_a_proxy_on_this_host_are_not_local(backend: Backend) -> None:
    with app_client(backend, "127.0.0.1") as local:
        assert local.get("/metrics").status_code == 200
        assert local.get("/metrics", headers={"X-Forwarded-For": CLIENT}).status_code == 403
        assert local.get("/metrics", headers={"Forwarded": f"for={CLIENT}"}).status_code == 403


def test_trusted_proxies_must_be_addresses_or_networks() -> None:
    assert Settings().with_values({"trusted_proxies": "127.0.0.1, 10.0.0.0/8 ::1"}).trusted_proxies == (
        "127.0.0.1", "10.0.0.0/8", "::1")
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Settings().with_values({"trusted_proxies": "proxy.example"})


@pytest.fixture
def mounted(backend: Backend) -> Iterator[object]:
    from studio.app import create_app

    app = create_app(backend, wake=lambda: None, password_hasher=CHEAP_HASHER)
    yield app


def test_the_mounted_app_has_gradios_launch_guard_on(mounted: object) -> None:
    from gradio.context import LocalContext
    from gradio.exceptions import InvalidPathError
    from gradio.processing_utils import _check_allowed

    blocks = next(route.app.get_blocks() for route in mounted.routes if getattr(route, "path", "") == "/studio")  # type: ignore[attr-defined]
    assert blocks.has_launched
    token = LocalContext.blocks.set(blocks)
    try:
        with pytest.raises(InvalidPathError):
            _check_allowed("/etc/passwd", check_in_upload_folder=True)
    finally:
        LocalContext.blocks.reset(token)
