"""Jobs the backend has on this node but the agent does not follow (their events were lost
with an in-process bus, or the journal with a disk): the agent lists what it follows in
its node state, and an *adopt only* message (the sweeper's) is followed from ComfyUI's
queue or history, or reported lost, and never submitted again."""

from __future__ import annotations

import requests

from backend.jobs.messages import upload_name
from comfysim import SimHandle

from .harness import NODE, STAGES, Harness, image_upload, invert_scale, job_message
from .test_recovery import _count_posts


def _job(harness: Harness, prefix: str) -> dict:
    asset = harness.store_image()
    return job_message(invert_scale(upload_name(asset), prefix=prefix), uploads=[image_upload(asset)], stages=STAGES)


def _following(harness: Harness) -> tuple[str, ...] | None:
    [view] = harness.registry.nodes()
    return view.state.following


def test_the_node_state_lists_the_prompts_the_agent_follows(sim: SimHandle, harness: Harness) -> None:
    assert _following(harness) == ()
    sim.set_faults(hang_in_node="ImageScaleBy")
    job = harness.dispatch(_job(harness, "listed"))
    harness.wait_until(lambda: _following(harness) == (job["prompt_id"],), what="listed while it runs")
    sim.reset_faults()
    harness.wait_end(job["job_id"])
    harness.wait_until(lambda: _following(harness) == (), what="gone once ended")


def test_an_adopt_only_job_that_comfyui_finished_is_reported_not_run_again(sim: SimHandle, harness: Harness) -> None:
    posts = _count_posts(sim)
    job = _job(harness, "adopted")
    asset = job["uploads"][0]["asset_id"]
    requests.post(f"{sim.url}/upload/image", files={"image": (asset + ".png", harness.blobs.path(asset).read_bytes())},
                  data={"subfolder": "studio"}, timeout=5).raise_for_status()
    # The prompt ran on ComfyUI while nobody followed it (its events were lost).
    requests.post(f"{sim.url}/prompt", json={"prompt": job["prompt"], "prompt_id": job["prompt_id"]}, timeout=5).raise_for_status()
    harness.wait_until(lambda: requests.get(f"{sim.url}/history/{job['prompt_id']}", timeout=5).json(), what="finished on ComfyUI")
    harness.dispatch({**job, "adopt_only": True, "started": True})
    assert harness.wait_end(job["job_id"])["type"] == "succeeded"
    assert [e["type"] for e in harness.events(job["job_id"])] == ["submitted", "output", "succeeded"]
    assert posts == {job["prompt_id"]: 1}  # only the one above: the agent posted nothing


def test_an_adopt_only_job_comfyui_does_not_know_is_reported_lost_never_submitted(sim: SimHandle, harness: Harness) -> None:
    posts = _count_posts(sim)
    started, waiting = _job(harness, "lost-started"), _job(harness, "lost-waiting")
    harness.dispatch({**started, "adopt_only": True, "started": True})
    harness.dispatch({**waiting, "adopt_only": True, "started": False})
    lost = harness.wait_end(started["job_id"])
    assert (lost["type"], lost["error_type"]) == ("failed", "Lost")
    assert harness.wait_end(waiting["job_id"])["type"] == "requeue"
    assert posts == {}
    assert harness.registry.reservations(NODE) == {}  # both settled (the harness frees the slots)
