"""The agent runs jobs on comfysim: events, outputs, uploads, idempotency, failures."""

from __future__ import annotations

from collections.abc import Callable

import requests
from PIL import Image

from backend.jobs.messages import upload_name
from comfysim import SimConfig, SimHandle, start_sim

from .harness import CKPT, NODE, STAGES, STEADY, Harness, alpha_of_rgb, image_upload, invert_scale, job_message, txt2img


def test_capabilities_and_state_are_published(sim: SimHandle, harness: Harness) -> None:
    caps = harness.registry.capabilities(NODE)
    assert caps is not None
    assert {"LoadImage", "ImageInvert", "KSampler", "SaveImage"} <= caps.classes
    assert f"checkpoints/{CKPT}" in caps.models
    [view] = harness.registry.nodes()
    state = view.state
    assert state.online and state.simulated and state.slots == 2
    assert state.label == "test-host" and sim.url not in state.to_json()
    assert state.caps_version and state.vram_total_mb > 0 and state.queue_remaining == 0


def test_model_free_job_reports_every_step_and_stores_the_output(sim: SimHandle, make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(sim.url, **STEADY)
    asset = harness.store_image(size=(32, 24), color=(10, 200, 30))
    job = harness.dispatch(
        job_message(
            invert_scale(upload_name(asset), scale_by=2.0),
            uploads=[image_upload(asset)],
            output_nodes=["4"],
            stages=STAGES,
        )
    )
    done = harness.wait_end(job["job_id"])
    assert done["type"] == "succeeded" and done["seconds"] >= 0
    assert harness.types(job["job_id"]) == ["submitted", "started", "output", "succeeded"]
    submitted, _, output, _ = harness.events(job["job_id"])
    assert submitted["prompt_id"] == job["prompt_id"] and submitted["node_id"] == NODE
    assert (output["graph_node"], output["kind"], output["format"], output["width"], output["height"]) == ("4", "image", "PNG", 64, 48)
    with Image.open(harness.blobs.path(output["asset_id"])) as img:
        assert img.size == (64, 48)
        pixel = img.convert("RGB").getpixel((5, 5))
        # (10, 200, 30) inverted; ComfyUI truncates float*255, so allow one step of rounding.
        assert all(abs(a - b) <= 1 for a, b in zip(pixel, (245, 55, 225)))
    user = harness.user_events(job["job_id"])
    stages = [(e["graph_node"], e["alias"]["en"]) for e in user if e["type"] == "stage"]
    assert stages == [("1", "Reading your image"), ("2", "Inverting colours"), ("3", "Scaling"), ("4", "Saving the result")]
    fractions = [e["fraction"] for e in user if e["type"] == "progress"]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    assert all(e["user_id"] == 7 for e in user)
    harness.wait_until(lambda: harness.agent.state.current.running_job is None, what="running_job cleared")


def test_the_same_input_is_uploaded_once_and_rechecked_after_a_reconnect(sim: SimHandle, harness: Harness) -> None:
    asset = harness.store_image()
    first = harness.dispatch(job_message(invert_scale(upload_name(asset), prefix="a"), uploads=[image_upload(asset)]))
    assert harness.wait_end(first["job_id"])["type"] == "succeeded"
    # From now on any upload fails at the sim: the next job must reuse the file it has.
    sim.set_faults(refuse_uploads=True)
    second = harness.dispatch(job_message(invert_scale(upload_name(asset), prefix="b"), uploads=[image_upload(asset)]))
    assert harness.wait_end(second["job_id"])["type"] == "succeeded"
    assert harness.agent.uploader.sent == 1
    # The node loses the file and the session (as a ComfyUI restarted on a fresh disk would):
    # the agent must not trust its memory, and upload again.
    sim.reset_faults()
    (sim.data_dir / "input" / upload_name(asset)).unlink()
    sim.close_websockets()
    harness.wait_until(lambda: harness.agent.uploader.sent == 1 and not harness.agent.uploader._present, what="memory dropped")
    third = harness.dispatch(job_message(invert_scale(upload_name(asset), prefix="c"), uploads=[image_upload(asset)]))
    assert harness.wait_end(third["job_id"])["type"] == "succeeded"
    assert harness.agent.uploader.sent == 2


def test_a_redelivered_job_is_not_submitted_twice(sim: SimHandle, make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(sim.url, **STEADY)
    asset = harness.store_image()
    job = job_message(invert_scale(upload_name(asset)), uploads=[image_upload(asset)])
    sim.set_faults(hang_in_node="ImageScaleBy")  # keeps the job running while the copy arrives
    harness.dispatch(job)
    harness.wait_until(lambda: [e for e in harness.user_events(job["job_id"], "stage") if e["graph_node"] == "3"], what="stage 3")
    harness.bus.publish_job(NODE, job)  # the same message again (a redelivery or a sweeper's republish)
    harness.wait_until(lambda: harness.types(job["job_id"]).count("submitted") == 2, what="second confirmation")
    sim.reset_faults()
    assert harness.wait_end(job["job_id"])["type"] == "succeeded"
    assert sim.node.number == 1  # POST /prompt happened once
    assert harness.types(job["job_id"]) == ["submitted", "started", "submitted", "output", "succeeded"]
    assert harness.bus.job_queue_depth(NODE) == 0


def test_a_prompt_already_on_comfyui_is_followed_not_resubmitted(sim: SimHandle, harness: Harness) -> None:
    asset = harness.store_image()
    job = job_message(invert_scale(upload_name(asset)), uploads=[image_upload(asset)], output_nodes=["4"])
    # A previous agent process submitted it and died before acking.
    harness.agent.uploader.ensure(job["uploads"], job_id=job["job_id"])
    answer = requests.post(f"{sim.url}/prompt", json={"prompt": job["prompt"], "prompt_id": job["prompt_id"]}, timeout=5)
    assert answer.status_code == 200
    harness.dispatch(job)
    done = harness.wait_end(job["job_id"])
    assert done["type"] == "succeeded"
    assert sim.node.number == 1
    assert harness.types(job["job_id"]) == ["submitted", "started", "output", "succeeded"]


def test_a_job_that_no_longer_holds_its_reservation_is_dropped(sim: SimHandle, harness: Harness) -> None:
    asset = harness.store_image()
    moved = job_message(invert_scale(upload_name(asset)), uploads=[image_upload(asset)])
    harness.dispatch(moved, reserve=False)
    kept = harness.dispatch(job_message(invert_scale(upload_name(asset), prefix="kept"), uploads=[image_upload(asset)]))
    assert harness.wait_end(kept["job_id"])["type"] == "succeeded"
    assert harness.events(moved["job_id"]) == [] and harness.user_events(moved["job_id"]) == []
    assert sim.node.number == 1 and harness.bus.job_queue_depth(NODE) == 0


def test_a_runtime_error_fails_the_job_with_the_stage_and_exception(sim: SimHandle, harness: Harness) -> None:
    asset = harness.store_image()
    stages = {"2": {"en": "Extracting the mask", "zh": "提取蒙版中"}}
    job = harness.dispatch(job_message(alpha_of_rgb(upload_name(asset)), uploads=[image_upload(asset)], stages=stages))
    failed = harness.wait_end(job["job_id"])
    assert failed["type"] == "failed"
    assert failed["error_type"] == "IndexError" and failed["graph_node"] == "2"
    assert failed["stage"] == "Extracting the mask" and failed["stage_alias"] == stages["2"]
    assert failed["message"] == "index 3 is out of bounds for dimension 3 with size 3"
    assert harness.types(job["job_id"]) == ["submitted", "started", "failed"]


def test_a_prompt_comfyui_refuses_fails_with_the_node_errors(sim: SimHandle, harness: Harness) -> None:
    asset = harness.store_image()
    job = harness.dispatch(job_message(invert_scale(upload_name(asset), scale_by=100), uploads=[image_upload(asset)], stages=STAGES))
    failed = harness.wait_end(job["job_id"])
    assert failed["type"] == "failed" and failed["error_type"] == "ValidationError"
    assert failed["graph_node"] == "3" and failed["stage"] == "Scaling"
    assert "node 3 (ImageScaleBy)" in failed["message"] and "scale_by" in failed["message"]
    assert harness.types(job["job_id"]) == ["failed"]
    assert harness.bus.job_queue_depth(NODE) == 0


def test_txt2img_reports_each_sampler_step_and_previews(make_harness: Callable[..., Harness]) -> None:
    sim = start_sim(SimConfig(models={"checkpoints": [CKPT]}, step_seconds=0.01, previews=True))
    try:
        harness = make_harness(sim.url, progress_interval=0, **STEADY)  # every step, unpaced
        job = harness.dispatch(job_message(txt2img(steps=8), output_nodes=["9"], stages={"3": {"en": "Drawing", "zh": "绘制中"}}))
        assert harness.wait_end(job["job_id"])["type"] == "succeeded"
        steps = [(e["value"], e["max"]) for e in harness.user_events(job["job_id"], "progress") if e["max"] == 8]
        assert steps == [(i, 8) for i in range(1, 9)]
        fractions = [e["fraction"] for e in harness.user_events(job["job_id"], "progress")]
        assert fractions == sorted(fractions)
        previews = harness.user_events(job["job_id"], "preview")
        assert previews and all(harness.blobs.exists(e["asset_id"]) for e in previews)
        [output] = harness.events(job["job_id"], "output")
        assert output["width"] == 64 and harness.blobs.exists(output["asset_id"])
        # The run is folded into the speed just after the terminal event is published.
        state = harness.wait_until(lambda: harness.agent.state.current.speed != 1.0 and harness.agent.state.current, what="speed")
        assert state.loaded_checkpoint == CKPT
    finally:
        sim.stop()


def test_fast_sampler_steps_are_paced_to_a_few_progress_events_a_second(make_harness: Callable[..., Harness]) -> None:
    sim = start_sim(SimConfig(models={"checkpoints": [CKPT]}, step_seconds=0.002, previews=False))
    try:
        harness = make_harness(sim.url, progress_interval=0.1, **STEADY)
        job = harness.dispatch(job_message(txt2img(steps=100), output_nodes=["9"]))
        assert harness.wait_end(job["job_id"])["type"] == "succeeded"
        progress = harness.user_events(job["job_id"], "progress")
        sampler = [e["value"] for e in progress if e["max"] == 100]
        # 100 steps in ~0.2 s: unpaced, one event each; paced, a handful (fewer still when slow).
        assert 1 <= len(sampler) <= 25, sampler
        assert sampler == sorted(sampler)
        fractions = [e["fraction"] for e in progress]
        assert fractions == sorted(fractions)
        stages = harness.user_events(job["job_id"], "stage")
        assert len(stages) >= 3  # stage changes are never held back
    finally:
        sim.stop()
