"""Transcripts §4-§7, §10-§15, §19-§20: running prompts, caching, runtime errors, routing."""

from __future__ import annotations

import io

import requests
from PIL import Image

from .helpers import WAIT, is_type, png_bytes, preview_graph, submit, types, upload

ONE_NODE = ["progress_state", "executing", "progress_state"]


def _start(sim, ws_factory):
    agent = ws_factory(sim.url, "agent-bea6228e")
    observer = ws_factory(sim.url, "observer-f68dda0d")
    assert upload(sim.url, "studio_in.png", png_bytes(), overwrite="true").status_code == 200
    return agent, observer


def test_model_free_pipeline(sim, ws_factory):
    from .helpers import pipeline

    agent, observer = _start(sim, ws_factory)
    response = submit(sim.url, pipeline(), agent.client_id, extra_data={"studio_job": "job-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["number"] == 0 and body["node_errors"] == {} and len(body["prompt_id"]) == 36
    prompt_id = body["prompt_id"]
    messages = agent.until_done(prompt_id)
    assert types(messages) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "progress_state",
        "progress_state",
        "executing",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if is_type(m, "status")] == [1, 1, 0]
    assert set(messages[2]["data"]) == {"prompt_id", "timestamp"}
    assert messages[3]["data"]["nodes"] == []
    assert messages[5]["data"] == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    state = messages[4]["data"]["nodes"]["1"]
    assert state == {
        "value": 0.0,
        "max": 1.0,
        "state": "running",
        "node_id": "1",
        "prompt_id": prompt_id,
        "display_node_id": "1",
        "parent_node_id": None,
        "real_node_id": "1",
    }
    assert list(messages[16]["data"]["nodes"]) == ["1", "2", "3", "4"]
    executed = messages[15]["data"]
    assert executed == {
        "node": "4",
        "display_node": "4",
        "output": {"images": [{"filename": "run_00001_.png", "subfolder": "studio", "type": "output"}]},
        "prompt_id": prompt_id,
    }
    assert types(observer.until_status(0)) == ["status", "status", "status"]

    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]
    assert list(history) == ["prompt", "outputs", "status", "meta"]
    assert history["prompt"][0] == 0 and history["prompt"][1] == prompt_id
    assert history["prompt"][3] == {"studio_job": "job-1", "client_id": agent.client_id}
    assert history["prompt"][4] == ["4"]
    assert history["outputs"] == {"4": executed["output"]}
    assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
    assert [m[0] for m in history["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert history["meta"] == {"4": {"node_id": "4", "display_node": "4", "parent_node": None, "real_node_id": "4"}}

    view = requests.get(f"{sim.url}/view", params=executed["output"]["images"][0], timeout=WAIT)
    assert view.status_code == 200 and view.headers["Content-Type"] == "image/png"
    assert view.headers["Content-Disposition"] == 'filename="run_00001_.png"'
    image = Image.open(io.BytesIO(view.content))
    assert image.size == (128, 96) and image.mode == "RGB"
    assert list(image.text) == ["prompt"]
    # The upload is (0, 0, 129); inverted and truncated to 8 bits like SaveImage does.
    red, green, blue = image.getpixel((0, 0))
    assert (red, green) == (255, 255) and abs(blue - 126) <= 1


def test_identical_resubmission_is_cached_and_resends_executed(sim, ws_factory):
    from .helpers import pipeline

    agent, _ = _start(sim, ws_factory)
    first = submit(sim.url, pipeline(), agent.client_id).json()["prompt_id"]
    agent.until_done(first)
    second = submit(sim.url, pipeline(), agent.client_id).json()
    assert second["number"] == 1
    messages = agent.until_done(second["prompt_id"])
    assert types(messages) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert messages[3]["data"]["nodes"] == ["1", "2", "3", "4"]
    assert messages[4]["data"]["output"]["images"][0]["filename"] == "run_00001_.png"
    assert messages[5]["data"]["nodes"] == {
        "4": {
            "value": 1,
            "max": 1,
            "state": "finished",
            "node_id": "4",
            "prompt_id": second["prompt_id"],
            "display_node_id": "4",
            "parent_node_id": None,
            "real_node_id": "4",
        }
    }
    assert sorted(p.name for p in (sim.data_dir / "output" / "studio").iterdir()) == ["run_00001_.png"]

    # Only scale_by changed: the loader and the inverter stay cached.
    third = submit(sim.url, pipeline(scale_by=0.5), agent.client_id).json()["prompt_id"]
    messages = agent.until_done(third)
    assert messages[3]["data"]["nodes"] == ["1", "2"]
    assert [m["data"]["node"] for m in messages if is_type(m, "executing")] == ["3", "4", None]
    assert messages[-5]["data"]["output"]["images"][0]["filename"] == "run_00002_.png"


def test_reuploading_different_bytes_invalidates_load_image_cache(sim, ws_factory):
    from .helpers import pipeline

    agent, _ = _start(sim, ws_factory)
    agent.until_done(submit(sim.url, pipeline(), agent.client_id).json()["prompt_id"])
    upload(sim.url, "studio_in.png", png_bytes(color=(9, 9, 9)), overwrite="true")
    prompt_id = submit(sim.url, pipeline(), agent.client_id).json()["prompt_id"]
    assert agent.until_done(prompt_id)[3]["data"]["nodes"] == []


def test_preview_image_explicit_prompt_id_and_front(sim, ws_factory):
    agent, _ = _start(sim, ws_factory)
    for _ in range(3):
        submit(sim.url, {"1": {"class_type": "NoSuchNode", "inputs": {}}})  # counts, even when rejected
    prompt_id = "8950d24b-6534-40bd-9876-21d9652b7224"
    body = submit(sim.url, preview_graph(), agent.client_id, prompt_id=prompt_id, front=True).json()
    assert body == {"prompt_id": prompt_id, "number": -3, "node_errors": {}}
    messages = agent.until_done(prompt_id)
    images = next(m for m in messages if is_type(m, "executed"))["data"]["output"]["images"]
    assert len(images) == 2 and all(i["type"] == "temp" and i["subfolder"] == "" for i in images)
    assert images[0]["filename"].startswith("ComfyUI_temp_") and images[0]["filename"].endswith("_00001_.png")
    assert requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]["prompt"][0] == -3
    explicit = submit(sim.url, preview_graph(color=1), agent.client_id, number=7).json()
    assert explicit["number"] == 7.0 and isinstance(explicit["number"], float)


def test_string_for_int_is_coerced_in_the_queued_prompt(sim, ws_factory):
    agent, _ = _start(sim, ws_factory)
    graph = preview_graph()
    graph["1"]["inputs"]["width"] = "24"
    prompt_id = submit(sim.url, graph, agent.client_id).json()["prompt_id"]
    agent.until_done(prompt_id)
    stored = requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]["prompt"][2]
    assert stored["1"]["inputs"]["width"] == 24


def test_runtime_error_image_to_mask_alpha_on_rgb(sim, ws_factory):
    agent, observer = _start(sim, ws_factory)
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "studio_in.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageToMask", "inputs": {"image": ["2", 0], "channel": "alpha"}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "studio/err"}},
    }
    prompt_id = submit(sim.url, graph, agent.client_id).json()["prompt_id"]
    messages = agent.until_done(prompt_id)
    assert types(messages)[-4:] == ["executing", "execution_error", "status", "executing"]
    error = messages[-3]["data"]
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (error["node_id"], error["node_type"], error["executed"]) == ("3", "ImageToMask", ["1", "2"])
    assert error["exception_type"] == "IndexError"
    assert error["exception_message"] == "index 3 is out of bounds for dimension 3 with size 3\n"
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert error["current_inputs"]["channel"] == ["alpha"]
    assert error["current_inputs"]["image"][0].startswith("tensor(")
    assert types(observer.until_status(0)) == ["status", "status", "status"]
    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1][0] == "execution_error"
    assert history["outputs"] == {} and history["meta"] == {}


def test_runtime_error_save_image_outside_output(sim, ws_factory):
    agent, _ = _start(sim, ws_factory)
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../../escape"}},
    }
    prompt_id = submit(sim.url, graph, agent.client_id).json()["prompt_id"]
    error = agent.until_done(prompt_id)[-3]["data"]
    assert error["exception_type"] == "Exception"
    assert error["exception_message"].startswith("**** ERROR: Saving image outside the output folder is not allowed.")
    assert error["exception_message"].endswith("\n")
    assert error["current_inputs"]["filename_prefix"] == ["../../escape"]
    assert error["current_inputs"]["extra_pnginfo"] == [None]
    assert error["executed"] == ["1"]


def test_prompt_without_client_id_only_broadcasts_progress_state(sim, ws_factory):
    agent, observer = _start(sim, ws_factory)
    response = requests.post(f"{sim.url}/prompt", json={"prompt": preview_graph(color=255), "client_id": None}, timeout=WAIT)
    prompt_id = response.json()["prompt_id"]
    expected = ["status", "status"] + ["progress_state"] * 4 + ["status"]
    assert types(agent.until_status(0)) == expected
    assert types(observer.until_status(0)) == expected
    history = requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]
    assert history["prompt"][3] == {} and history["status"]["status_str"] == "success"
    assert len(history["outputs"]["2"]["images"]) == 2


def test_save_image_websocket_legacy_frames(sim, ws_factory):
    agent, observer = _start(sim, ws_factory)
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 3, "color": 65280}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    prompt_id = submit(sim.url, graph, agent.client_id).json()["prompt_id"]
    messages = agent.until_done(prompt_id)
    node_part = types(messages)[9:-3]
    assert node_part == ["progress_state", "progress", "binary1"] * 3 + ["progress_state"]
    frames = [m for m in messages if not isinstance(m, dict)]
    assert all(f.image_format == 2 and f.image.startswith(b"\x89PNG\r\n\x1a\n") for f in frames)
    assert Image.open(io.BytesIO(frames[0].image)).getpixel((0, 0))[:3] == (0, 255, 0)
    progress = [m["data"] for m in messages if is_type(m, "progress")]
    assert progress == [{"value": i, "max": 3, "prompt_id": prompt_id, "node": "2"} for i in range(3)]
    assert messages[-4]["data"]["nodes"]["2"]["value"] == 3 and messages[-4]["data"]["nodes"]["2"]["state"] == "finished"
    assert requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]["outputs"] == {}
    assert types(observer.until_status(0)) == ["status", "status", "status"]


def test_save_image_websocket_metadata_frames_come_before_progress(sim, ws_factory):
    client = ws_factory(sim.url, "ff-db8256", flags=True)
    assert is_type(client.recv(), "feature_flags")
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 65280}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    prompt_id = submit(sim.url, graph, client.client_id).json()["prompt_id"]
    messages = client.until_done(prompt_id)
    assert types(messages)[9:-3] == ["progress_state", "binary4", "progress"] * 2 + ["progress_state"]
    frame = next(m for m in messages if not isinstance(m, dict))
    assert frame.metadata == {
        "node_id": "2",
        "prompt_id": prompt_id,
        "display_node_id": "2",
        "parent_node_id": None,
        "real_node_id": "2",
        "image_type": "image/png",
    }


def test_reusing_prompt_id_overwrites_history(sim, ws_factory):
    agent, _ = _start(sim, ws_factory)
    for color in (5, 6):
        body = submit(sim.url, preview_graph(color=color), agent.client_id, prompt_id="fixed-04c055").json()
        assert body["prompt_id"] == "fixed-04c055"
        agent.until_done("fixed-04c055")
    history = requests.get(f"{sim.url}/history", timeout=WAIT).json()
    assert list(history) == ["fixed-04c055"]
    assert history["fixed-04c055"]["prompt"][2]["1"]["inputs"]["color"] == 6
    assert requests.post(f"{sim.url}/history", json={"delete": ["fixed-04c055"]}, timeout=WAIT).status_code == 200
    assert requests.get(f"{sim.url}/history", timeout=WAIT).json() == {}


def test_partial_execution_targets(sim, ws_factory):
    agent, _ = _start(sim, ws_factory)
    graph = {
        **preview_graph(batch=1),
        "4": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "partial/x"}},
    }
    body = submit(sim.url, graph, agent.client_id, partial_execution_targets=["4"]).json()
    agent.until_done(body["prompt_id"])
    history = requests.get(f"{sim.url}/history/{body['prompt_id']}", timeout=WAIT).json()[body["prompt_id"]]
    assert history["prompt"][4] == ["4"]
    assert history["outputs"] == {"4": {"images": [{"filename": "x_00001_.png", "subfolder": "partial", "type": "output"}]}}


def test_history_paging(sim, ws_factory):
    agent, _ = _start(sim, ws_factory)
    ids = []
    for color in range(3):
        ids.append(submit(sim.url, preview_graph(color=color), agent.client_id).json()["prompt_id"])
        agent.until_done(ids[-1])
    assert list(requests.get(f"{sim.url}/history?max_items=2", timeout=WAIT).json()) == ids[1:]
    assert list(requests.get(f"{sim.url}/history?max_items=1&offset=0", timeout=WAIT).json()) == ids[:1]
    assert requests.post(f"{sim.url}/history", json={"clear": True}, timeout=WAIT).status_code == 200
    assert requests.get(f"{sim.url}/history", timeout=WAIT).json() == {}
