"""The agent under comfysim's faults: lost and silent websockets, a ComfyUI that stops and
comes back, and cancellation through the registry."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from backend.jobs.messages import upload_name
from comfysim import SimConfig, SimHandle, start_sim

from .harness import NODE, STAGES, Harness, image_upload, invert_scale, job_message


def _stage_seen(harness: Harness, job_id: str, node: str) -> Callable[[], bool]:
    return lambda: any(e["graph_node"] == node for e in harness.user_events(job_id, "stage"))


def _hung_job(sim: SimHandle, harness: Harness, prefix: str = "hung") -> dict:
    """A job stuck in ImageScaleBy (node 3) until the fault is cleared."""
    asset = harness.store_image()
    sim.set_faults(hang_in_node="ImageScaleBy")
    job = harness.dispatch(
        job_message(invert_scale(upload_name(asset), prefix=prefix), uploads=[image_upload(asset)], stages=STAGES)
    )
    harness.wait_until(_stage_seen(harness, job["job_id"], "3"), what="job hanging in node 3")
    return job


def test_a_dropped_websocket_mid_job_is_reconciled(sim: SimHandle, harness: Harness) -> None:
    job = _hung_job(sim, harness)
    old_session = harness.agent.socket.client_id
    sim.close_websockets()
    harness.wait_until(lambda: harness.agent.socket.client_id not in (None, old_session), what="a fresh session")
    sim.reset_faults()  # the job finishes while its events go to the dead session
    done = harness.wait_end(job["job_id"])
    assert done["type"] == "succeeded"
    assert harness.types(job["job_id"]) == ["submitted", "started", "output", "succeeded"]
    assert harness.blobs.exists(harness.events(job["job_id"], "output")[0]["asset_id"])
    assert harness.agent.online


def test_a_silent_websocket_mid_job_is_reconciled(sim: SimHandle, harness: Harness) -> None:
    job = _hung_job(sim, harness)
    sim.set_faults(ws_silent=True, hang_in_node=None)
    silent_at = time.monotonic()
    done = harness.wait_end(job["job_id"])
    assert done["type"] == "succeeded"
    # Nothing arrived on the socket: only the watchdog's silence timeout can have ended it.
    assert time.monotonic() - silent_at >= harness.config.silence_timeout * 0.9
    assert harness.types(job["job_id"]) == ["submitted", "started", "output", "succeeded"]


def test_a_stopped_comfyui_takes_the_node_offline_and_back(make_harness: Callable[..., Harness]) -> None:
    config = SimConfig(step_seconds=0.01)
    sim = start_sim(config)
    port = sim.port
    try:
        harness = make_harness(sim.url)
        running = _hung_job(sim, harness, prefix="running")
        asset = harness.store_image(color=(1, 2, 3))
        waiting = harness.dispatch(job_message(invert_scale(upload_name(asset), prefix="waiting"), uploads=[image_upload(asset)]))
        harness.wait_event(waiting["job_id"], "submitted")
        sim.stop()
        harness.wait_until(lambda: not harness.agent.online, what="node offline")
        harness.wait_until(lambda: not harness.registry.nodes()[0].state.online, what="offline state published")
        # A job that was on its way when the node went down stays in the queue, untouched.
        queued = job_message(invert_scale(upload_name(asset), prefix="queued"), uploads=[image_upload(asset)])
        harness.registry.restore(NODE, {queued["prompt_id"]: 1.0})  # reserve() refuses an offline node
        harness.bus.publish_job(NODE, queued)
        harness.wait_until(lambda: harness.bus.job_queue_depth(NODE) == 1, what="job left in the queue")

        sim = start_sim(config, port=port)  # ComfyUI restarted: empty queue, history and input/
        harness.wait_until(lambda: harness.agent.online, what="node back online")
        assert harness.wait_end(running["job_id"])["error_type"] == "Lost"  # it had started
        assert harness.wait_end(waiting["job_id"])["type"] == "requeue"  # it never started
        assert harness.wait_end(queued["job_id"])["type"] == "succeeded"  # inputs uploaded again
        assert harness.agent.uploader.sent == 3  # two inputs before the restart, one again after
        assert harness.registry.capabilities(NODE) is not None
    finally:
        sim.stop()


def test_a_released_reservation_cancels_the_job_on_comfyui(sim: SimHandle, harness: Harness) -> None:
    running = _hung_job(sim, harness)
    asset = harness.store_image(color=(9, 9, 9))
    pending = harness.dispatch(job_message(invert_scale(upload_name(asset), prefix="pending"), uploads=[image_upload(asset)]))
    harness.wait_event(pending["job_id"], "submitted")
    # The backend cancels both by releasing their slots.
    harness.registry.release(NODE, pending["prompt_id"])
    harness.registry.release(NODE, running["prompt_id"])
    harness.wait_until(lambda: not harness.agent.runner.active(), what="both jobs dropped")
    assert requests.get(f"{sim.url}/queue", timeout=5).json()["queue_pending"] == []
    sim.reset_faults()  # the interrupt lands when the next node starts (cooperative)
    history = harness.wait_until(
        lambda: requests.get(f"{sim.url}/history/{running['prompt_id']}", timeout=5).json(), what="interrupted entry"
    )
    assert history[running["prompt_id"]]["status"]["status_str"] == "error"
    assert harness.types(running["job_id"]) == ["submitted", "started"]
    assert harness.types(pending["job_id"]) == ["submitted"]
