"""The integrator's whole path over HTTP, against the embedded and the distributed
studio: upload, quote, submit (and retry it), follow the events to the end, download the
output, then history, balance and ledger; and a webhook told of the end, signed."""

from __future__ import annotations

import json
import uuid

from backend.jobs import webhooks
from tests.waiting import wait_for

from .conftest import WEBHOOK_SECRET, Receiver, Stream, Studio, png_bytes


def test_upload_submit_follow_download(studio: Studio, receiver: Receiver) -> None:
    api = studio.user(credits=100)
    data = png_bytes(40, 30)
    asset = api.upload(data)
    assert api.upload(data) == asset, "the same bytes are the same asset"

    spec = api.get("/v1/workflows/invert-scale").json()
    scale = next(p for p in spec["params"] if p["name"] == "scale")
    assert scale["min"] == 0.25 and scale["max"] == 4.0 and scale["label"]["zh"]

    params = {"image": asset, "scale": 2.0}
    quote = api.post("/v1/quote", json={"workflow": "invert-scale", "params": params}).json()
    assert quote["accepted"] and quote["cost"] >= 0

    key = uuid.uuid4().hex
    body = {"workflow": "invert-scale", "params": params, "webhook_url": receiver.url}
    studio.server.faults(hang_in_node="ImageInvert")  # held until its stream is open
    try:
        first = api.submit(body, key)
        assert first.status_code == 201, first.text
        job = first.json()
        again = api.submit(body, key)
        assert again.status_code == 200 and again.json()["id"] == job["id"], "a retry is the same job"
        stream = Stream(api, job["id"])
        opened = stream.until(lambda m, _: m[1] == "state")
    finally:
        studio.server.reset_faults()
    events = [(kind, data) for _, kind, data in opened + stream.until(lambda m, _: m[1] == "end")]
    stream.close()
    kinds = [k for k, _ in events]
    assert kinds[0] == "state" and kinds[-1] == "end", kinds
    # A sub-second job may show no progress event: agents pace progress (agent/pacing.py)
    # and the end, which says 100 %, supersedes a held-back value.
    assert "output" in kinds and set(kinds) <= {"state", "stage", "progress", "preview", "output", "end"}, kinds
    end = events[-1][1]
    assert end["state"] == "succeeded" and end["outputs"], end

    output = end["outputs"][0]["asset_id"]
    picture = api.get(f"/v1/assets/{output}")
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")

    history = api.get("/v1/jobs").json()
    assert [j["id"] for j in history["jobs"]] == [job["id"]]
    balance = api.get("/v1/balance").json()["balance"]
    assert balance == 100 - quote["cost"], "charged once although submitted twice"
    entries = api.get("/v1/ledger").json()["entries"]
    assert [e["kind"] for e in entries] == ["charge", "grant"]
    assert entries[0]["job_id"] == job["id"] and entries[0]["amount"] == -quote["cost"]

    wait_for(lambda: receiver.received, timeout=30, what="the webhook call")
    headers, raw = receiver.received[0]
    assert webhooks.verify(WEBHOOK_SECRET, headers["X-Studio-Signature"], raw)
    assert not webhooks.verify("another secret", headers["X-Studio-Signature"], raw)
    posted = json.loads(raw)
    assert posted["job"]["id"] == job["id"] and posted["job"]["state"] == "succeeded"
    hook = wait_for(lambda: (h := api.get(f"/v1/jobs/{job['id']}/webhook").json())["state"] == "delivered" and h,
                    timeout=30, what="the delivery recorded")
    assert [a["status"] for a in hook["attempts"]] == [200]
    studio.check_books()


def test_other_users_ids_are_not_found(studio: Studio) -> None:
    alice, mallory = studio.user(), studio.user()
    asset = alice.upload(png_bytes(20, 20, (1, 2, 3)))
    job = alice.submit({"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True}).json()
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/events", f"/v1/jobs/{job['id']}/webhook",
                 f"/v1/assets/{asset}"):
        r = mallory.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (path, r.text)
    r = mallory.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 404
    r = mallory.submit({"workflow": "invert-scale", "params": {"image": asset}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "image", "someone else's upload is no input"
