"""Sessions, sign-in throttle, sign-up modes, the file route and page guards, through the
real app (FastAPI TestClient) on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from backend import accounts, assets
from backend.accounts import codes, ledger
from backend.db.models import RedeemCode, utcnow
from backend.db.studio_models import StudioSession
from backend.errors import AuthError, InvalidParameter, PermissionDenied, RateLimited, RedeemError
from backend.runtime import Backend
from backend.accounts import app_settings
from backend.accounts.sessions import Sessions, _digest
from backend.accounts.signin import FREE_FAILURES, sign_in, sign_up
from studio.auth import SESSION_COOKIE
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


def balance(backend: Backend, user_id: int) -> int:
    with backend.db.read() as s:
        return ledger.balance(s, user_id)


def user_id(backend: Backend, name: str) -> int:
    with backend.db.read() as s:
        return accounts.find_user(s, name).id


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
    for _ in range(FREE_FAILURES):
        with pytest.raises(AuthError):
            sign_in(backend.db, backend.settings, "cy", "wrong-password", address=ADDRESS, hasher=CHEAP_HASHER)
    with pytest.raises(RateLimited) as exc:
        # refused unchecked, even if right
        sign_in(backend.db, backend.settings, "cy", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)
    # The fixture's backoff (600 s) is capped at 5 minutes, and the message says so.
    assert "5 分钟" in exc.value.zh and "5 minutes" in str(exc.value) and exc.value.retry_after == pytest.approx(300, abs=2)


def test_signup_modes_and_welcome_grant(backend: Backend) -> None:
    settings = backend.settings
    dee = sign_up(backend.db, settings, "dee", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)  # open by default
    assert balance(backend, dee.id) == settings.welcome_credits == 100
    app_settings.set_signup(backend.db, mode="invite", welcome=5)
    with pytest.raises(InvalidParameter, match="needs an invite code"):
        sign_up(backend.db, settings, "eve", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)
    used, expired, good = codes.create_batch(backend.db, 3, 20, expires_days=1).codes
    codes.redeem(backend.db, dee.id, used)
    with backend.db.write() as s:
        s.execute(update(RedeemCode).where(RedeemCode.code_hash == codes.code_hash(expired)).values(expires_at=utcnow()))
    for bad in (used, expired, "NOPE-NOPE-NOPE-NOPE"):
        with pytest.raises(RedeemError, match="invite code is not valid"):
            sign_up(backend.db, settings, "eve", PASSWORD, invite_code=bad, address=ADDRESS, hasher=CHEAP_HASHER)
    eve = sign_up(backend.db, settings, "eve", PASSWORD, invite_code=good, address=ADDRESS, hasher=CHEAP_HASHER)
    assert balance(backend, eve.id) == 25  # the invite's credits and the welcome grant
    app_settings.set_signup(backend.db, mode="off", welcome=5)
    with pytest.raises(PermissionDenied, match="Sign-up is closed"):
        sign_up(backend.db, settings, "fay", PASSWORD, address=ADDRESS, hasher=CHEAP_HASHER)
    assert [u.name for u in accounts.list_users(backend.db)] == ["dee", "eve"]  # no refused sign-up left a row
    assert ledger.verify(backend.db) == []


def test_expired_sessions_are_refused_and_purged_when_the_studio_starts(backend: Backend) -> None:
    user = make_user(backend.db, "gil")
    sessions = Sessions(backend.db)
    live, stale = sessions.create(user.id), sessions.create(user.id)
    with backend.db.write() as s:
        s.execute(update(StudioSession).where(StudioSession.token_hash == _digest(stale)).values(expires_at=utcnow()))
    assert sessions.resolve(stale) is None and sessions.resolve(live).name == "gil"
    from studio.app import create_app

    app = create_app(backend, wake=lambda: None, password_hasher=CHEAP_HASHER)
    with TestClient(app, follow_redirects=False) as client:  # starting the app purges
        with backend.db.read() as s:
            assert list(s.scalars(select(StudioSession.token_hash))) == [_digest(live)]
        client.cookies.set(SESSION_COOKIE, stale)
        assert client.get("/studio/").status_code == 303
        client.cookies.set(SESSION_COOKIE, live)
        assert client.get("/studio/").status_code == 200


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


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
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
    ivy_upload = assets.store_upload(backend.db, backend.blobs, other.id, [png((4, 5, 6))], name="mine.png",
                                     max_bytes=10**6, max_pixels=10**6)
    login(client, "hal")
    assert client.get(f"/files/{ivy_upload.id}").status_code == 404  # and the other way round


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_previews_are_served_to_the_user_whose_event_named_them(backend: Backend, client: TestClient) -> None:
    for name in ("jo", "kim"):
        make_user(backend.db, name)
    make_user(backend.db, "boss", role="admin")
    feed = client.app.state.studio.feed  # type: ignore[attr-defined]
    named, unnamed = backend.blobs.write_bytes(png((9, 9, 9))), backend.blobs.write_bytes(png((8, 8, 8)))
    jo = user_id(backend, "jo")
    feed.publish({"type": "preview", "job_id": "j1", "ts": 0, "user_id": jo, "asset_id": named.sha256, "kind": "image"})
    assert feed.snapshot(user_id(backend, "kim"), "j1") is None and feed.snapshot(jo, "j1").preview == named.sha256
    for name, status in (("jo", 200), ("kim", 404), ("boss", 200)):
        login(client, name)
        r = client.get(f"/files/{named.sha256}")
        assert r.status_code == status, name
        if status == 200:  # streamed whole, the type sniffed from its first bytes
            assert r.content == png((9, 9, 9)) and r.headers["content-type"] == "image/png"
        assert client.get(f"/files/{unnamed.sha256}").status_code == 404, name  # no event named it


def test_gradio_config_names_no_comfyui_host(backend: Backend, client: TestClient) -> None:
    make_user(backend.db, "lee")
    login(client, "lee")
    config = client.get("/studio/config").text
    assert "8188" not in config and "comfy" not in config.lower().replace("comfyui-compatible", "")
