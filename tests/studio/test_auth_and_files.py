"""Sessions, sign-in throttle, sign-up modes, the file route and page guards, through the
real app (FastAPI TestClient) on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from backend import accounts, assets, codes
from backend.errors import AuthError, PermissionDenied, RateLimited
from backend.runtime import Backend
from studio import app_settings
from studio.auth import NAME_ADDRESS, Sessions, sign_in, sign_up
from studio.feed import Feed
from tests.backend.helpers import CHEAP_HASHER, PASSWORD, make_user
from tests.e2e.stack import png_bytes


ADDRESS = "203.0.113.5"


def png(color: tuple[int, int, int]) -> bytes:
    return png_bytes(96, 96, color)


@pytest.fixture
def client(backend: Backend) -> Iterator[TestClient]:
    from studio.app import create_app

    app = create_app(backend, wake=lambda: None, password_hasher=CHEAP_HASHER)
    with TestClient(app, follow_redirects=False) as c:
        yield c


def login(client: TestClient, name: str, password: str = PASSWORD) -> None:
    r = client.post("/login", data={"name": name, "password": password})
    assert r.status_code == 303, r.text


def test_session_survives_a_new_process_and_ends_at_sign_out(backend: Backend) -> None:
    user = make_user(backend.db, "ana")
    token = Sessions(backend.db).create(user.id)
    other_replica = Sessions(backend.db)  # no shared memory: only the database
    assert other_replica.resolve(token).name == "ana"
    other_replica.revoke(token)
    assert Sessions(backend.db).resolve(token) is None
    assert Sessions(backend.db).resolve("forged") is None


def test_disabled_user_loses_sessions(backend: Backend) -> None:
    user = make_user(backend.db, "bo")
    sessions = Sessions(backend.db)
    token = sessions.create(user.id)
    accounts.set_disabled(backend.db, "bo", True)
    assert Sessions(backend.db).resolve(token) is None


def test_wrong_passwords_are_slowed_down(backend: Backend) -> None:
    make_user(backend.db, "cy")
    for _ in range(NAME_ADDRESS.allowed):
        with pytest.raises(AuthError):
            sign_in(backend.db, backend.settings, "cy", "wrong-password", address=ADDRESS, hasher=CHEAP_HASHER)
    with pytest.raises(RateLimited) as exc:
        # refused unchecked, even if right
        sign_in(backend.db, backend.settings, "cy", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)
    assert "秒" in exc.value.zh and exc.value.retry_after > 0


def test_signup_modes_and_welcome_grant(backend: Backend) -> None:
    settings = backend.settings
    user = sign_up(backend.db, settings, "dee", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)
    assert accounts.list_users(backend.db)[0].balance == settings.welcome_credits == user.balance + 100
    app_settings.set_signup(backend.db, mode="invite", welcome=5)
    with pytest.raises(Exception, match="invite"):
        sign_up(backend.db, settings, "eve", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)
    code = codes.create_batch(backend.db, 1, 20).codes[0]
    eve = sign_up(backend.db, settings, "eve", PASSWORD, invite_code=code, address=ADDRESS, hasher=CHEAP_HASHER)
    with backend.db.read() as s:
        assert accounts.get_user(s, eve.id).balance == 25
    app_settings.set_signup(backend.db, mode="off", welcome=5)
    with pytest.raises(PermissionDenied):
        sign_up(backend.db, settings, "fay", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)


def test_pages_redirect_to_sign_in_and_login_sets_an_httponly_cookie(backend: Backend, client: TestClient) -> None:
    make_user(backend.db, "gus")
    r = client.get("/studio/history")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    bad = client.post("/login", data={"name": "gus", "password": "nope-nope"})
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    r = client.post("/login?next=//evil.example", data={"name": "gus", "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/studio/"
    assert re.search(r"studio_session=.*HttpOnly", r.headers["set-cookie"], re.IGNORECASE)
    assert client.get("/studio/").status_code == 200
    client.post("/logout")  # sign-out is a POST (a GET only shows the button)
    assert client.get("/studio/").status_code == 303


def test_outputs_only_to_their_owner_and_admins(backend: Backend, client: TestClient) -> None:
    owner, other = make_user(backend.db, "hal"), make_user(backend.db, "ivy")
    make_user(backend.db, "root", role="admin")
    record = assets.store_upload(backend.db, backend.blobs, owner.id, [png((1, 2, 3))], name="../x.png",
                                 max_bytes=10**6, max_pixels=10**6)
    assert client.get(f"/files/{record.id}").status_code == 404  # not signed in
    login(client, "ivy")
    assert client.get(f"/files/{record.id}").status_code == 404  # someone else's: same as missing
    login(client, "hal")
    r = client.get(f"/files/{record.id}?download=1")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "attachment" in r.headers["content-disposition"] and "nosniff" in r.headers["x-content-type-options"]
    login(client, "root")
    assert client.get(f"/files/{record.id}").status_code == 200
    assert other.id != owner.id


def test_previews_are_served_to_the_user_whose_event_named_them(backend: Backend) -> None:
    feed = Feed(backend.bus)
    a, b = make_user(backend.db, "jo"), make_user(backend.db, "kim")
    blob = backend.blobs.write_bytes(png((9, 9, 9)))
    feed.publish({"type": "preview", "job_id": "j1", "ts": 0, "user_id": a.id, "asset": blob.sha256, "kind": "image"})
    assert feed.preview_owner(blob.sha256) == a.id != b.id
    assert feed.snapshot(b.id, "j1") is None and feed.snapshot(a.id, "j1").preview == blob.sha256


def test_gradio_config_names_no_comfyui_host(backend: Backend, client: TestClient) -> None:
    make_user(backend.db, "lee")
    login(client, "lee")
    config = client.get("/studio/config").text
    assert "8188" not in config and "comfy" not in config.lower().replace("comfyui-compatible", "")
