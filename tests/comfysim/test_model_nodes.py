"""Simulated model nodes: text-to-image with step progress, determinism, VRAM, previews,
LoRA/ControlNet/upscale chains, inpainting, animated WEBP and audio."""

from __future__ import annotations

import io

import numpy as np
import requests
from PIL import Image

from comfysim import DEMO_MODELS

from .helpers import WAIT, is_type, png_bytes, submit, text_to_image, types, upload


def _run(sim, client, prompt):
    response = submit(sim.url, prompt, client.client_id)
    assert response.status_code == 200, response.text
    return response.json()["prompt_id"], client.until_done(response.json()["prompt_id"])


def _picture(sim, messages) -> Image.Image:
    executed = [m for m in messages if is_type(m, "executed")][-1]["data"]["output"]["images"][0]
    view = requests.get(f"{sim.url}/view", params=executed, timeout=WAIT)
    return Image.open(io.BytesIO(view.content))


def test_text_to_image_template_reports_every_step_and_saves_png(demo_sim, ws_factory):
    agent = ws_factory(demo_sim.url)
    prompt_id, messages = _run(demo_sim, agent, text_to_image(steps=6, width=96, height=64))
    progress = [m["data"] for m in messages if is_type(m, "progress")]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(i, 6, "3") for i in range(1, 7)]
    assert all(p["prompt_id"] == prompt_id for p in progress)
    # ComfyUI's order (comfy_execution/graph.py), not depth-first: see test_comfyui_order.py
    assert [m["data"]["node"] for m in messages if is_type(m, "executing")] == ["4", "5", "7", "6", "3", "8", "9", None]
    picture = _picture(demo_sim, messages)
    assert picture.format == "PNG" and picture.size == (96, 64)


def test_pictures_are_deterministic_per_seed(demo_sim, ws_factory):
    agent = ws_factory(demo_sim.url)
    pictures = []
    for seed, prefix in ((1, "a"), (2, "b"), (1, "c")):
        _, messages = _run(demo_sim, agent, text_to_image(seed=seed, steps=2, prefix=prefix))
        pictures.append(np.asarray(_picture(demo_sim, messages), dtype=np.float32))
    assert np.array_equal(pictures[0], pictures[2])
    assert np.abs(pictures[0] - pictures[1]).mean() > 10


def test_out_of_memory_error_shape(make_sim, ws_factory):
    sim = make_sim(models={"checkpoints": ["sd_xl_base_1.0.safetensors"]}, vram_total_bytes=8 * 1024**3, step_seconds=0)
    agent = ws_factory(sim.url)
    prompt = text_to_image(ckpt="sd_xl_base_1.0.safetensors", width=1024, height=1024, steps=1)
    _, messages = _run(sim, agent, prompt)
    error = next(m for m in messages if is_type(m, "execution_error"))["data"]
    assert error["node_type"] == "KSampler" and error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("CUDA out of memory. Tried to allocate")
    assert "This error means you ran out of memory on your GPU." in error["exception_message"]
    _, messages = _run(sim, agent, text_to_image(ckpt="sd_xl_base_1.0.safetensors", width=512, height=512, steps=1))
    assert any(is_type(m, "execution_success") for m in messages)


def test_sampler_previews_when_enabled(make_sim, ws_factory):
    sim = make_sim(models={"checkpoints": DEMO_MODELS["checkpoints"]}, previews=True, step_seconds=0)
    legacy = ws_factory(sim.url)
    _, messages = _run(sim, legacy, text_to_image(steps=3))
    sampler = [t for t in types(messages) if t in ("progress", "binary1", "binary4")]
    assert sampler == ["progress", "binary1"] * 3
    frame = next(m for m in messages if not isinstance(m, dict))
    assert frame.image_format == 1 and frame.image[:2] == b"\xff\xd8"
    modern = ws_factory(sim.url, flags=True)
    modern.recv()
    _, messages = _run(sim, modern, text_to_image(steps=2, seed=5))
    assert [t for t in types(messages) if t in ("progress", "binary4")] == ["binary4", "progress"] * 2
    assert next(m for m in messages if not isinstance(m, dict)).metadata["image_type"] == "image/jpeg"


def test_lora_controlnet_and_upscale_chain(demo_sim, ws_factory):
    agent = ws_factory(demo_sim.url)
    upload(demo_sim.url, "lineart.png", png_bytes(64, 64, (255, 255, 255)))
    prompt = text_to_image(steps=2, prefix="chain")
    prompt.update(
        {
            "10": {
                "class_type": "LoraLoader",
                "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "add_detail.safetensors", "strength_model": 0.8, "strength_clip": 1.0},
            },
            "11": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "control_v11p_sd15_lineart.pth"}},
            "12": {"class_type": "LoadImage", "inputs": {"image": "lineart.png"}},
            "13": {
                "class_type": "ControlNetApplyAdvanced",
                "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["12", 0], "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0},
            },
            "14": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "RealESRGAN_x4plus.pth"}},
            "15": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["14", 0], "image": ["8", 0]}},
        }
    )
    prompt["6"]["inputs"]["clip"] = ["10", 1]
    prompt["3"]["inputs"].update({"model": ["10", 0], "positive": ["13", 0], "negative": ["13", 1]})
    prompt["9"]["inputs"]["images"] = ["15", 0]
    _, messages = _run(demo_sim, agent, prompt)
    assert _picture(demo_sim, messages).size == (256, 256)
    assert [m["data"]["max"] for m in messages if is_type(m, "progress") and m["data"]["node"] == "15"] == [1]


def test_inpaint_and_advanced_sampler(demo_sim, ws_factory):
    agent = ws_factory(demo_sim.url)
    upload(demo_sim.url, "photo.png", png_bytes(64, 64, (10, 200, 30)))
    prompt = text_to_image(steps=10, prefix="inpaint")
    prompt["20"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    prompt["21"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}}
    prompt["22"] = {
        "class_type": "VAEEncodeForInpaint",
        "inputs": {"pixels": ["20", 0], "vae": ["4", 2], "mask": ["21", 0], "grow_mask_by": 6},
    }
    prompt["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": ["4", 0], "add_noise": "enable", "noise_seed": 3, "steps": 10, "cfg": 7.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["22", 0], "start_at_step": 4, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        },
    }
    _, messages = _run(demo_sim, agent, prompt)
    assert [m["data"]["max"] for m in messages if is_type(m, "progress")] == [6] * 6
    assert _picture(demo_sim, messages).size == (64, 64)


def test_animated_webp(sim, ws_factory):
    agent = ws_factory(sim.url)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 3, "color": 255}},
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {"images": ["1", 0], "filename_prefix": "anim/studio", "fps": 6.0, "lossless": False, "quality": 80, "method": "default"},
        },
    }
    _, messages = _run(sim, agent, prompt)
    output = next(m for m in messages if is_type(m, "executed"))["data"]["output"]
    assert output == {"images": [{"filename": "studio_00001_.webp", "subfolder": "anim", "type": "output"}], "animated": [True]}
    assert Image.open(sim.data_dir / "output" / "anim" / "studio_00001_.webp").format == "WEBP"


def test_music_workflow_writes_a_real_flac(demo_sim, ws_factory):
    agent = ws_factory(demo_sim.url)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "stable-audio-open-1.0.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "lofi piano", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentAudio", "inputs": {"seconds": 1.0, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {"model": ["1", 0], "seed": 9, "steps": 3, "cfg": 5.0, "sampler_name": "dpmpp_3m_sde_gpu", "scheduler": "exponential", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0},
        },
        "6": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveAudio", "inputs": {"audio": ["6", 0], "filename_prefix": "audio/ComfyUI"}},
    }
    _, messages = _run(demo_sim, agent, prompt)
    output = next(m for m in messages if is_type(m, "executed"))["data"]["output"]
    assert output == {"audio": [{"filename": "ComfyUI_00001_.flac", "subfolder": "audio", "type": "output"}]}
    data = requests.get(f"{demo_sim.url}/view", params=output["audio"][0], timeout=WAIT).content
    assert data[:4] == b"fLaC"
    info = int.from_bytes(data[8 + 10 : 8 + 18], "big")
    sample_rate, channels, samples = info >> 44, ((info >> 41) & 0x7) + 1, info & ((1 << 36) - 1)
    assert (sample_rate, channels) == (44100, 2) and samples == round(44100 / 2048) * 2048
    assert data[42:44] == b"\xff\xf8"  # first frame sync code
