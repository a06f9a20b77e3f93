"""Transcript §8-§9: validation failures, the partially valid prompt, malformed bodies."""

from __future__ import annotations

import requests

from .helpers import WAIT, is_type, pipeline, png_bytes, preview_graph, submit, text_to_image, upload

FAILED = {
    "type": "prompt_outputs_failed_validation",
    "message": "Prompt outputs failed validation",
    "details": "",
    "extra_info": {},
}


def _reject(sim, prompt, status=400):
    response = submit(sim.url, prompt)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return response.json()


def test_value_bigger_than_max(sim):
    upload(sim.url, "studio_in.png", png_bytes())
    body = _reject(sim, pipeline(scale_by=100))
    assert body == {
        "error": FAILED,
        "node_errors": {
            "3": {
                "errors": [
                    {
                        "type": "value_bigger_than_max",
                        "message": "Value 100.0 bigger than max of 8.0",
                        "details": "scale_by",
                        "extra_info": {
                            "input_name": "scale_by",
                            "input_config": ["FLOAT", {"default": 1.0, "max": 8.0, "min": 0.01, "step": 0.01}],
                            "received_value": 100.0,
                        },
                    }
                ],
                "dependent_outputs": ["4"],
                "class_type": "ImageScaleBy",
            }
        },
    }


def test_all_failing_nodes_reported_at_once(sim):
    upload(sim.url, "studio_in.png", png_bytes())
    prompt = pipeline()
    prompt["2"]["inputs"] = {}
    prompt["3"]["inputs"]["upscale_method"] = "super-resolution"
    body = _reject(sim, prompt)
    assert list(body["node_errors"]) == ["2", "3"]
    assert body["node_errors"]["2"]["errors"] == [
        {
            "type": "required_input_missing",
            "message": "Required input is missing",
            "details": "image",
            "extra_info": {"input_name": "image"},
        }
    ]
    combo = body["node_errors"]["3"]["errors"][0]
    assert combo["type"] == "value_not_in_list"
    assert combo["details"] == (
        "upscale_method: 'super-resolution' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"
    )
    assert combo["extra_info"]["input_config"] == [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}]


def test_load_image_of_missing_file(sim):
    body = _reject(sim, pipeline(image="not_uploaded.png"))
    assert body["node_errors"]["1"] == {
        "errors": [
            {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": "image - Invalid image file: not_uploaded.png",
                "extra_info": {"input_name": "image"},
            }
        ],
        "dependent_outputs": ["4"],
        "class_type": "LoadImage",
    }


def test_unknown_class_and_missing_class_type(sim):
    prompt = pipeline()
    prompt["2"]["class_type"] = "NoSuchNode"
    assert _reject(sim, prompt) == {
        "error": {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#2'",
            "extra_info": {},
        },
        "node_errors": {},
    }
    body = _reject(sim, {"1": {"inputs": {}}})
    assert body["error"]["message"] == "Cannot execute because a node is missing the class_type property."
    assert body["error"]["details"] == "Node ID '#1'"


def test_no_outputs_and_no_prompt(sim):
    body = _reject(sim, {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}})
    assert body["error"] == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}
    response = requests.post(f"{sim.url}/prompt", json={"client_id": "x"}, timeout=WAIT)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}},
        "node_errors": {},
    }


def test_mask_linked_into_image_input(sim):
    upload(sim.url, "studio_in.png", png_bytes())
    prompt = pipeline()
    prompt["3"]["inputs"]["image"] = ["1", 1]
    error = _reject(sim, prompt)["node_errors"]["3"]["errors"][0]
    assert error == {
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": "image, received_type(MASK) mismatch input_type(IMAGE)",
        "extra_info": {
            "input_name": "image",
            "input_config": ["IMAGE", {}],
            "received_type": "MASK",
            "linked_node": ["1", 1],
        },
    }


def test_non_json_and_ui_format_bodies_give_plain_500(sim):
    response = requests.post(f"{sim.url}/prompt", data=b"{not json", timeout=WAIT)
    assert response.status_code == 500
    assert response.text == "500 Internal Server Error\n\nServer got itself in trouble"
    ui_graph = {"last_node_id": 2, "last_link_id": 1, "nodes": [{"id": 1, "type": "EmptyImage"}], "links": []}
    assert submit(sim.url, ui_graph).status_code == 500


def test_integer_link_id_is_an_exception_during_validation(sim):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": [1, 0]}},
    }
    body = _reject(sim, prompt)
    assert body["error"]["details"] == "Exception when validating node: 1"
    error = body["node_errors"]["2"]["errors"][0]
    assert (error["type"], error["message"], error["details"]) == (
        "exception_during_validation",
        "Exception when validating node",
        "1",
    )
    assert error["extra_info"]["exception_type"] == "KeyError"
    assert isinstance(error["extra_info"]["traceback"], list)
    assert body["node_errors"]["2"]["dependent_outputs"] == ["2"]


def test_text_to_image_without_checkpoints(sim):
    body = _reject(sim, text_to_image())
    assert body["node_errors"]["4"]["errors"][0]["details"] == (
        "ckpt_name: 'v1-5-pruned-emaonly.safetensors' not in []"
    )
    assert body["node_errors"]["4"]["dependent_outputs"] == ["9"]
    prompt = text_to_image(seed=-1)
    prompt["3"]["inputs"]["sampler_name"] = "nope"
    body = _reject(sim, prompt)
    assert list(body["node_errors"]) == ["4", "3"]
    seed_error, sampler_error = body["node_errors"]["3"]["errors"]
    assert (seed_error["type"], seed_error["message"], seed_error["details"]) == (
        "value_smaller_than_min",
        "Value -1 smaller than min of 0",
        "seed",
    )
    assert sampler_error["details"] == "sampler_name: 'nope' not in (list of length 42)"
    assert sampler_error["extra_info"] == {"input_name": "sampler_name", "input_config": None, "received_value": "nope"}


def test_invalid_input_type(sim):
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": "wide", "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    error = _reject(sim, prompt)["node_errors"]["1"]["errors"][0]
    assert error["type"] == "invalid_input_type"
    assert error["message"] == "Failed to convert an input value to a INT value"


def test_partially_valid_prompt_is_queued_with_node_errors(sim, ws_factory):
    agent = ws_factory(sim.url)
    upload(sim.url, "studio_in.png", png_bytes())
    prompt = {
        **pipeline(),
        "5": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "studio/bad"}},
        "6": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 99, "sigma": 1.0}},
    }
    response = submit(sim.url, prompt, agent.client_id)
    assert response.status_code == 200
    body = response.json()
    assert body["node_errors"] == {
        "6": {
            "errors": [
                {
                    "type": "value_bigger_than_max",
                    "message": "Value 99 bigger than max of 31",
                    "details": "blur_radius",
                    "extra_info": {
                        "input_name": "blur_radius",
                        "input_config": ["INT", {"default": 1, "max": 31, "min": 1, "step": 1}],
                        "received_value": 99,
                    },
                }
            ],
            "dependent_outputs": ["5"],
            "class_type": "ImageBlur",
        }
    }
    messages = agent.until_done(body["prompt_id"])
    assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == ["1", "2", "3", "4", None]
    history = requests.get(f"{sim.url}/history/{body['prompt_id']}", timeout=WAIT).json()[body["prompt_id"]]
    assert history["prompt"][4] == ["4"] and list(history["outputs"]) == ["4"]


def test_validation_failures_send_nothing_on_the_websocket(sim, ws_factory):
    agent = ws_factory(sim.url)
    rejected = submit(sim.url, pipeline(image="missing.png"), agent.client_id)
    assert rejected.status_code == 400
    assert rejected.json()["node_errors"]["1"]["errors"][0]["details"] == "image - Invalid image file: missing.png"
    # One socket delivers in order: anything the rejection sent comes before the next
    # prompt's messages, so reading up to that prompt's end sees it, with no time window.
    accepted = submit(sim.url, preview_graph(), agent.client_id).json()["prompt_id"]
    messages = agent.until_done(accepted)
    statuses = [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if is_type(m, "status")]
    assert statuses == [1, 1, 0]  # queued, started, done: the accepted prompt's, nothing else
    named = {m["data"]["prompt_id"] for m in messages if isinstance(m, dict) and "prompt_id" in m["data"]}
    assert named == {accepted}
