"""Webhooks against the running studio: retried with back-off on 5xx and timeouts, each
attempt logged for the owner and signed; a failed job's refund is told too; private
targets outside the operator's allowlist are refused."""

from __future__ import annotations

import json

import pytest

from backend.jobs import webhooks
from backend.config import Settings
from backend.errors import InvalidParameter
from tests.waiting import wait_for

from .conftest import WEBHOOK_SECRET, Receiver, Studio, png_bytes


def test_retried_until_delivered(embedded: Studio, receiver: Receiver) -> None:
    receiver.statuses = [500, 0, 503]  # an error, a timeout, an error, then 200
    api = embedded.user()
    asset = api.upload()
    job = api.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True,
                      "webhook_url": receiver.url}).json()
    hook = wait_for(lambda: (h := api.get(f"/v1/jobs/{job['id']}/webhook").json())["state"] == "delivered" and h,
                    60, "the delivery after the retries")
    assert [a["status"] for a in hook["attempts"]] == [500, None, 503, 200]
    assert hook["attempts"][1]["error"] == "timed out"
    assert len(receiver.received) == 4
    bodies = {raw for _, raw in receiver.received}
    assert len(bodies) == 1, "every attempt posts the same record"
    for headers, raw in receiver.received:
        assert webhooks.verify(WEBHOOK_SECRET, headers["X-Studio-Signature"], raw)


def test_a_failed_job_is_told_with_its_refund(embedded: Studio, receiver: Receiver) -> None:
    embedded.server.faults(raise_in_node="ImageInvert")
    try:
        api = embedded.user()
        asset = api.upload(png_bytes(21, 22, (5, 6, 7)))
        job = api.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True,
                          "webhook_url": receiver.url}).json()
        wait_for(lambda: receiver.received, 60, "the webhook of the failed job")
    finally:
        embedded.server.reset_faults()
    posted = json.loads(receiver.received[0][1])["job"]
    assert posted["id"] == job["id"] and posted["state"] == "failed"
    assert posted["refunded"] == job["cost"] and posted["reason"]["en"] and posted["reason"]["zh"]


def test_private_targets_are_refused(embedded: Studio) -> None:
    api = embedded.user()
    asset = api.upload()
    for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]:80/x",
                "http://user:pw@example.com/", "file:///etc/passwd"):
        r = api.submit({"workflow": "invert-scale", "params": {"image": asset}, "webhook_url": url})
        assert r.status_code == 400 and r.json()["error"]["field"] == "webhook_url", (url, r.text)
    assert api.get("/v1/jobs").json()["jobs"] == [], "nothing made or charged"


def test_the_allowlist_check() -> None:
    settings = Settings(webhook_secret="s")
    resolve = {"public.example": ["93.184.216.34"], "inside.example": ["10.0.0.5"], "mixed.example": ["93.184.216.34", "127.0.0.1"],
               "mapped.example": ["::ffff:127.0.0.1"]}
    lookup = lambda host, port: resolve[host]  # noqa: E731 - DNS answers for the test
    assert webhooks.check_url(settings, "https://public.example/h", resolve=lookup)
    for host in ("inside.example", "mixed.example", "mapped.example"):
        with pytest.raises(InvalidParameter, match="private or local"):
            webhooks.check_url(settings, f"https://{host}/h", resolve=lookup)
    allowed = Settings(webhook_secret="s", webhook_allow_networks=("10.0.0.0/8",))
    assert webhooks.check_url(allowed, "https://inside.example/h", resolve=lookup)
    with pytest.raises(InvalidParameter, match="webhook_secret"):
        webhooks.check_url(Settings(), "https://public.example/h", resolve=lookup)
