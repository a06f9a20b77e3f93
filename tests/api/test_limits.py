"""Per-user limits over the API: each refuses exactly at its bound, says which limit it
is and when it frees up (429 + Retry-After; the storage quota 413)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from .conftest import Api, Studio, fill_slots, png_bytes


def set_limits(studio: Studio, api: Api, **values: int | None) -> dict[str, Any]:
    boss = studio.user(role="admin", scope="admin")
    r = boss.request("PUT", f"/v1/admin/users/{api.name}/limits", json={"limits": values})
    assert r.status_code == 200, r.text
    return r.json()


def refused(r: requests.Response, limit: str) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    body = r.json()["error"]
    assert body["code"] == limit and limit in body["message"] and body["message_zh"], body
    assert int(r.headers["Retry-After"]) >= 1
    return body


def job(api: Api, asset: str, **extra: Any) -> requests.Response:
    return api.submit({"workflow": "invert-scale", "params": {"image": asset, **extra}, "queue_if_busy": True})


@pytest.fixture
def hanging(embedded: Studio) -> Iterator[None]:
    embedded.server.faults(hang_in_node="ImageInvert")
    yield
    embedded.server.reset_faults()


def test_submits_per_minute(embedded: Studio) -> None:
    api = embedded.user()
    set_limits(embedded, api, submits_per_minute=3)
    asset = api.upload()
    for _ in range(3):
        assert job(api, asset).status_code == 201
    body = refused(job(api, asset), "submits_per_minute")
    assert body["retry_after"] <= 60
    assert len(api.get("/v1/jobs").json()["jobs"]) == 3


def test_daily_spend_cap(embedded: Studio) -> None:
    api = embedded.user()
    asset = api.upload()
    cost = api.post("/v1/quote", json={"workflow": "invert-scale", "params": {"image": asset}}).json()["cost"]
    set_limits(embedded, api, daily_spend_cap=2 * cost)
    assert job(api, asset).status_code == 201
    assert job(api, asset).status_code == 201
    refused(job(api, asset), "daily_spend_cap")
    assert api.get("/v1/balance").json()["balance"] == 1000 - 2 * cost


def test_waiting_and_running_jobs(embedded: Studio, hanging: None) -> None:
    api = embedded.user()
    running, _ = fill_slots(api, api.upload(png_bytes(33, 33, (9, 99, 199))))
    asset = api.upload()
    set_limits(embedded, api, max_running_jobs=len(running) + 1, max_waiting_jobs=2)
    for _ in range(2):
        r = job(api, asset)
        assert r.status_code == 201 and r.json()["state"] == "queued", r.text
    refused(job(api, asset), "max_waiting_jobs")
    set_limits(embedded, api, max_running_jobs=len(running), max_waiting_jobs=0)
    refused(job(api, asset), "max_running_jobs")
    for j in api.get("/v1/jobs").json()["jobs"]:
        api.post(f"/v1/jobs/{j['id']}/cancel")


def noise_png(side: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG")
    return buf.getvalue()


def test_storage_quota(embedded: Studio) -> None:
    api = embedded.user()
    set_limits(embedded, api, storage_quota_mb=1)
    sizes = 0
    while True:
        data = noise_png(260)
        if sizes + len(data) > 1024 * 1024:
            break
        api.upload(data)
        sizes += len(data)
    r = api.post("/v1/assets", files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "storage_quota_mb", r.text
    boss = embedded.user(role="admin", scope="admin")
    me = next(u for u in boss.get("/v1/admin/users").json()["users"] if u["name"] == api.name)
    assert me["usage"]["storage_bytes"] == sizes and me["limits"]["storage_quota_mb"] == 1
