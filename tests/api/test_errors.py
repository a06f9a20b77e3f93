"""Every error status of the API, in its one shape, against the running embedded studio."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import update

from backend.accounts import tokens
from backend.db.api_models import ApiToken
from tests.waiting import wait_for

from .conftest import MAX_UPLOAD, Api, Studio, fill_slots, png_bytes


def error(r: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()["error"]
    assert set(body) >= {"code", "message", "message_zh", "field"} and body["message"] and body["message_zh"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def test_401_without_a_valid_token(embedded: Studio) -> None:
    bare = requests.get(embedded.url + "/api/v1/balance", timeout=10)
    error(bare, 401, "unauthorized")
    assert bare.headers["WWW-Authenticate"] == "Bearer"
    error(Api(embedded.url, "sk_" + "x" * 40).get("/v1/balance"), 401)
    api = embedded.user()
    who = tokens.resolve(embedded.db, api.token)
    tokens.revoke(embedded.db, who.user_id, who.token_id)
    error(api.get("/v1/balance"), 401)
    expiring = embedded.user()
    with embedded.db.write() as s:
        s.execute(update(ApiToken).where(ApiToken.token_hash == tokens.digest(expiring.token))
                  .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    assert "expired" in error(expiring.get("/v1/balance"), 401)["message"]


def test_a_session_cookie_is_no_api_credential(embedded: Studio) -> None:
    r = requests.get(embedded.url + "/api/v1/balance", cookies={"studio_session": "anything"}, timeout=10)
    error(r, 401)


def test_403_scopes(embedded: Studio) -> None:
    reader = embedded.user(scope="read")
    assert reader.get("/v1/balance").status_code == 200
    error(reader.submit({"workflow": "invert-scale", "params": {}}), 403, "forbidden")
    error(reader.post("/v1/assets", files={"file": ("a.png", png_bytes(), "image/png")}), 403)
    error(reader.get("/v1/admin/users"), 403)
    boss = embedded.user(role="admin", scope="admin")
    assert boss.get("/v1/admin/users").status_code == 200
    error(boss.get("/v1/balance"), 403)
    error(boss.submit({"workflow": "invert-scale", "params": {}}), 403)
    admin_person = embedded.token(boss, "jobs")
    error(admin_person.get("/v1/admin/nodes"), 403)


def test_400_bad_params_name_the_field(embedded: Studio) -> None:
    api = embedded.user()
    asset = api.upload()
    body = error(api.submit({"workflow": "invert-scale", "params": {"image": asset, "scale": 99}}), 400, "invalid_parameter")
    assert body["field"] == "scale" and "4" in body["message"]
    assert error(api.submit({"workflow": "invert-scale", "params": {"image": asset, "colour": 1}}), 400)["field"] == "colour"
    assert error(api.post("/v1/jobs", data="{not json", headers={"Content-Type": "application/json"}), 400)
    assert error(api.post("/v1/quote", json={"params": {}}), 400)["field"] == "workflow"
    small = api.upload(png_bytes(40, 30))
    quote = api.post("/v1/quote", json={"workflow": "img2img-sd15", "params": {"image": small, "prompt": "a cat"}}).json()
    assert quote["accepted"] is False and "64" in quote["guard"]["en"] and quote["guard"]["zh"]
    error(api.submit({"workflow": "img2img-sd15", "params": {"image": small, "prompt": "a cat"}}), 400, "guard_rejected")
    error(api.post("/v1/assets", files={"file": ("a.png", b"not a picture", "image/png")}), 400, "invalid_upload")
    error(api.submit({"workflow": "invert-scale", "params": {"image": asset}, "webhook_url": "ftp://x"}), 400)
    assert api.get("/v1/balance").json()["balance"] == 1000, "nothing charged"


def test_402_not_enough_credits(embedded: Studio) -> None:
    api = embedded.user(credits=0)
    asset = api.upload()
    error(api.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True}), 402,
          "insufficient_credits")
    assert api.get("/v1/jobs").json()["jobs"] == []


def test_404_not_there(embedded: Studio) -> None:
    api = embedded.user()
    error(api.get("/v1/jobs/" + uuid.uuid4().hex), 404, "not_found")
    error(api.get("/v1/assets/" + "0" * 64), 404)
    error(api.get("/v1/assets/../../etc/passwd"), 404)
    error(api.get("/v1/workflows/no-such-workflow"), 404)
    error(api.get("/v1/no-such-route"), 404)


def test_409_idempotency_conflict_and_ended_jobs(embedded: Studio) -> None:
    api = embedded.user()
    asset = api.upload()
    key = uuid.uuid4().hex
    job = api.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True}, key).json()
    body = error(api.submit({"workflow": "photo-flip", "params": {"image": asset}, "queue_if_busy": True}, key), 409,
                 "idempotency_conflict")
    assert body["field"] == "Idempotency-Key"
    balance = api.get("/v1/balance").json()["balance"]
    other = api.submit({"workflow": "invert-scale", "params": {"image": asset, "scale": 2.0}, "queue_if_busy": True}, key)
    assert error(other, 409, "idempotency_conflict")["field"] == "Idempotency-Key", "the same workflow, other params"
    same = api.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True}, key)
    assert same.status_code == 200 and same.json()["id"] == job["id"], same.text
    assert api.get("/v1/balance").json()["balance"] == balance, "neither the conflict nor the retry charged"
    assert len(api.get("/v1/jobs").json()["jobs"]) == 1
    wait_for(lambda: api.get(f"/v1/jobs/{job['id']}").json()["state"] == "succeeded", 60, "the job to succeed")
    error(api.post(f"/v1/jobs/{job['id']}/cancel"), 409, "job_state")


@pytest.fixture
def held(embedded: Studio) -> Any:
    """Every slot of the simulated node held by jobs that hang until released; yields the
    first refusal (409 busy) with the client, its upload and the held jobs."""
    embedded.server.faults(hang_in_node="ImageInvert")
    api = embedded.user()
    asset = api.upload(png_bytes(70, 70, (7, 77, 177)))  # bytes no other test runs: ComfyUI's cache skips nothing
    try:
        running, refusal = fill_slots(api, asset)
        yield api, asset, running, refusal
    finally:
        embedded.server.reset_faults()


def test_409_busy_then_queue_and_cancel_refunds(embedded: Studio, held: Any) -> None:
    api, asset, running, refusal = held
    body = error(refusal, 409, "busy")
    assert body["wait_seconds"] > 0 and body["field"] == "queue_if_busy"
    queued = api.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True})
    assert queued.status_code == 201 and queued.json()["state"] == "queued" and queued.json()["ahead"] is not None
    before = api.get("/v1/balance").json()["balance"]
    cancelled = api.post(f"/v1/jobs/{queued.json()['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["refunded"] == queued.json()["cost"]
    assert api.get("/v1/balance").json()["balance"] == before + cancelled["refunded"]
    for job in running:
        stopped = api.post(f"/v1/jobs/{job['id']}/cancel")
        assert stopped.status_code == 200 and stopped.json()["state"] == "cancelled", stopped.text
    embedded.check_books()


def test_413_upload_too_large(embedded: Studio) -> None:
    api = embedded.user()
    body = error(api.post("/v1/assets", files={"file": ("big.png", b"\x89PNG" + b"0" * MAX_UPLOAD, "image/png")}), 413,
                 "too_large")
    assert body["field"] == "file"


def test_413_before_the_body_is_read(embedded: Studio) -> None:
    api = embedded.user()
    conn = http.client.HTTPConnection(urlsplit(embedded.url).netloc, timeout=30)
    try:  # announces 50 MB, sends a few bytes: the answer comes before the body
        conn.putrequest("POST", "/api/v1/assets")
        conn.putheader("Authorization", f"Bearer {api.token}")
        conn.putheader("Content-Type", "multipart/form-data; boundary=b")
        conn.putheader("Content-Length", str(50 * 1024 * 1024))
        conn.endheaders()
        conn.send(b"--b\r\n")
        answer = conn.getresponse()
        assert answer.status == 413
        assert json.loads(answer.read())["error"]["code"] == "too_large"
    finally:
        conn.close()
