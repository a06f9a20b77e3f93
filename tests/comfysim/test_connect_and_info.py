"""Transcript §1-§2: connecting, simple GET endpoints, /api aliases, /object_info."""

from __future__ import annotations

import json

import requests

from comfysim import SimConfig, start_sim

from .helpers import WAIT, WsClient, is_type

JSON = "application/json; charset=utf-8"


def test_first_message_is_status_with_sid(sim, ws_factory):
    agent = ws_factory(sim.url, "agent-bea6228e")
    assert agent.sid == "agent-bea6228e"
    anonymous = WsClient(sim.url, client_id="")
    first = anonymous.recv()
    assert first["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
    assert len(first["data"]["sid"]) == 32 and int(first["data"]["sid"], 16) >= 0
    anonymous.close()


def test_feature_flags_negotiation(sim):
    client = WsClient(sim.url, "ff-db8256", flags=True)
    assert client.recv() == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "ff-db8256"}}
    assert client.recv() == {
        "type": "feature_flags",
        "data": {"supports_preview_metadata": True, "max_upload_size": 104857600},
    }
    # Only the first message is a negotiation; later ones are ignored.
    client.ws.send(json.dumps({"type": "feature_flags", "data": {}}))
    client.assert_silent()
    client.close()


def test_websocket_alias_under_api(sim):
    client = WsClient(sim.url, "alias-test", path="/api/ws")
    assert client.recv()["data"]["sid"] == "alias-test"
    client.close()


def test_simple_get_endpoints(sim):
    expected = {
        "/prompt": {"exec_info": {"queue_remaining": 0}},
        "/api/prompt": {"exec_info": {"queue_remaining": 0}},
        "/queue": {"queue_running": [], "queue_pending": []},
        "/features": {"supports_preview_metadata": True, "max_upload_size": 104857600},
        "/history?max_items=1": {},
        "/history/unknown-id": {},
        "/object_info/NoSuchNode": {},
    }
    for path, body in expected.items():
        response = requests.get(sim.url + path, timeout=WAIT)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"] == JSON
        assert response.json() == body, path


def test_every_route_is_also_under_api(sim):
    for path in ("/queue", "/history", "/object_info/ImageInvert", "/features", "/models"):
        assert requests.get(f"{sim.url}/api{path}", timeout=WAIT).json() == requests.get(sim.url + path, timeout=WAIT).json()
    # system_stats reports live memory figures, which may move between the two requests.
    stats = [requests.get(base + "/system_stats", timeout=WAIT).json() for base in (f"{sim.url}/api", sim.url)]
    assert stats[0]["system"]["comfyui_version"] == stats[1]["system"]["comfyui_version"]
    assert [d["name"] for d in stats[0]["devices"]] == [d["name"] for d in stats[1]["devices"]]
    assert requests.post(f"{sim.url}/api/interrupt", timeout=WAIT).status_code == 200
    assert requests.get(f"{sim.url}/api/view?filename=nope.png", timeout=WAIT).status_code == 404


def test_object_info_entry_matches_real_schema(sim):
    body = requests.get(f"{sim.url}/object_info/ImageInvert", timeout=WAIT).json()
    info = body["ImageInvert"]
    assert info["input"] == {"required": {"image": ["IMAGE"]}}
    assert info["input_order"] == {"required": ["image"]}
    assert (info["output"], info["output_is_list"], info["output_name"]) == (["IMAGE"], [False], ["IMAGE"])
    assert (info["name"], info["display_name"], info["python_module"], info["category"]) == (
        "ImageInvert",
        "Invert Image",
        "nodes",
        "image",
    )
    assert info["output_node"] is False
    blur = requests.get(f"{sim.url}/object_info/ImageBlur", timeout=WAIT).json()["ImageBlur"]
    assert blur["input"]["required"]["blur_radius"] == ["INT", {"default": 1, "max": 31, "min": 1, "step": 1}]


def test_object_info_lists_supported_classes_with_live_combos(make_sim):
    sim = make_sim(models={"checkpoints": ["b.safetensors", "a.safetensors"], "upscale_models": ["RealESRGAN_x4plus.pth"]})
    everything = requests.get(f"{sim.url}/object_info", timeout=WAIT).json()
    for name in ("LoadImage", "SaveImage", "KSampler", "VAEDecode", "SaveAudio", "ImageCompositeMasked"):
        assert name in everything
    assert everything["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["a.safetensors", "b.safetensors"]
    assert everything["UpscaleModelLoader"]["input"]["required"]["model_name"] == [
        "COMBO",
        {"options": ["RealESRGAN_x4plus.pth"]},
    ]
    assert everything["LoadImage"]["input"]["required"]["image"][0] == []
    (sim.data_dir / "input" / "x.png").write_bytes(b"not checked")
    info = requests.get(f"{sim.url}/object_info/LoadImage", timeout=WAIT).json()
    assert info["LoadImage"]["input"]["required"]["image"] == [["x.png"], {"image_upload": True}]


def test_system_stats_and_models(make_sim):
    sim = make_sim(models={"checkpoints": ["v1-5-pruned-emaonly.safetensors"]}, vram_total_bytes=8 * 1024**3)
    stats = requests.get(f"{sim.url}/system_stats", timeout=WAIT).json()
    assert set(stats["system"]) == {
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "required_frontend_version",
        "installed_templates_version",
        "required_templates_version",
        "python_version",
        "pytorch_version",
        "embedded_python",
        "argv",
    }
    assert stats["system"]["comfyui_version"] == "0.3.64"
    device = stats["devices"][0]
    assert set(device) == {"name", "type", "index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"}
    assert device["vram_total"] == 8 * 1024**3
    assert "checkpoints" in requests.get(f"{sim.url}/models", timeout=WAIT).json()
    assert requests.get(f"{sim.url}/models/checkpoints", timeout=WAIT).json() == ["v1-5-pruned-emaonly.safetensors"]
    assert requests.get(f"{sim.url}/models/loras", timeout=WAIT).json() == []
    assert requests.get(f"{sim.url}/models/nope", timeout=WAIT).status_code == 404


def test_port_zero_picks_distinct_free_ports():
    first, second = start_sim(), start_sim()
    try:
        assert first.port != second.port and first.port > 0
        assert first.url == f"http://127.0.0.1:{first.port}"
        assert is_type(WsClient(second.url).recv(), "status")
    finally:
        first.stop()
        second.stop()


def test_startup_delay_refuses_connections_until_ready():
    sim = start_sim(SimConfig(startup_delay=0.5))
    try:
        try:
            requests.get(f"{sim.url}/system_stats", timeout=WAIT)
            refused = False
        except requests.ConnectionError:
            refused = True
        assert refused
        sim.wait_ready(5)
        assert requests.get(f"{sim.url}/system_stats", timeout=WAIT).status_code == 200
    finally:
        sim.stop()
