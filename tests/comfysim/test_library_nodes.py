"""Nodes added for the workflow library: model-free ones computed for real (strings, blend,
stitch, resize-and-pad, image size, Canny), LTX-Video and ACE-Step simulated with real shapes."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import requests
from PIL import Image

from comfysim.nodes import REGISTRY

from .helpers import WAIT, is_type, png_bytes, submit, upload


def _call(class_type: str, **inputs):
    # Model-free nodes never touch their run context.
    return REGISTRY[class_type].function(None, **inputs)


def _run(sim, client, prompt):
    response = submit(sim.url, prompt, client.client_id)
    assert response.status_code == 200, response.text
    assert response.json()["node_errors"] == {}
    return client.until_done(response.json()["prompt_id"])


def _executed(messages, node):
    return next(m["data"]["output"] for m in messages if is_type(m, "executed") and m["data"]["node"] == node)


def test_string_concatenate_joins_even_an_empty_side():
    assert _call("StringConcatenate", string_a="a cat", string_b="anime", delimiter=", ") == ("a cat, anime",)
    assert _call("StringConcatenate", string_a="a cat", string_b="", delimiter=", ") == ("a cat, ",)


def test_image_blend_modes_follow_comfyui():
    a = np.full((1, 2, 2, 3), 0.25, np.float32)
    b = np.full((1, 2, 2, 3), 0.5, np.float32)
    expected = {"normal": 0.5, "multiply": 0.125, "screen": 0.625, "overlay": 0.25, "difference": 0.0}
    for mode, value in expected.items():
        (out,) = _call("ImageBlend", image1=a, image2=b, blend_factor=1.0, blend_mode=mode)
        assert np.allclose(out, value), mode
    (half,) = _call("ImageBlend", image1=a, image2=b, blend_factor=0.5, blend_mode="normal")
    assert np.allclose(half, 0.375)
    (resized,) = _call("ImageBlend", image1=a, image2=np.ones((1, 5, 7, 3), np.float32), blend_factor=1.0,
                       blend_mode="multiply")
    assert resized.shape == a.shape and np.allclose(resized, 0.25)


def test_image_stitch_matches_sizes_and_adds_spacing():
    left = np.zeros((1, 40, 60, 3), np.float32)
    right = np.ones((1, 20, 20, 3), np.float32)
    (out,) = _call("ImageStitch", image1=left, image2=right, direction="right", match_image_size=True,
                   spacing_width=3, spacing_color="red")
    assert out.shape == (1, 40, 60 + 4 + 40, 3)  # odd spacing rounds up to even; right scaled to height 40
    assert np.allclose(out[0, 0, 61], (1.0, 0.0, 0.0))
    (up,) = _call("ImageStitch", image1=left, image2=right, direction="up", match_image_size=False,
                  spacing_width=0, spacing_color="white")
    assert up.shape == (1, 60, 60, 3) and up[0, 0, 0, 0] == 0.0 and up[0, 0, 30, 0] == 1.0  # right on top, centred
    assert _call("ImageStitch", image1=left, direction="down", match_image_size=True, spacing_width=0,
                 spacing_color="white")[0] is left


def test_resize_and_pad_fits_and_centres():
    image = np.zeros((1, 50, 100, 3), np.float32)
    (out,) = _call("ResizeAndPadImage", image=image, target_width=64, target_height=64, padding_color="white",
                   interpolation="area")
    assert out.shape == (1, 64, 64, 3)
    assert out[0, 0, 32, 0] == 1.0 and out[0, 32, 32, 0] == 0.0 and out[0, 63, 32, 0] == 1.0  # bands above/below


def test_canny_finds_the_outline_of_a_square():
    image = np.zeros((1, 64, 64, 3), np.float32)
    image[:, 16:48, 16:48, :] = 1.0
    (edges,) = _call("Canny", image=image, low_threshold=0.4, high_threshold=0.8)
    assert edges.shape == (1, 64, 64, 3) and set(np.unique(edges)) <= {0.0, 1.0}
    assert edges[0, 32, 14:19, 0].any() and not edges[0, 32, 24:40, 0].any() and not edges[0, 2, 2, 0]


def test_ltxv_scheduler_uses_comfyui_arithmetic():
    latent = {"samples": np.zeros((1, 128, 13, 16, 24), np.float32)}
    (sigmas,) = _call("LTXVScheduler", steps=4, max_shift=2.05, base_shift=0.95, stretch=False, terminal=0.1,
                      latent=latent)
    shift = 13 * 16 * 24 * (1.1 / 3072) + 0.95 - (1.1 / 3072) * 1024
    expected = [math.exp(shift) / (math.exp(shift) + (1 / s - 1)) if s else 0.0 for s in (1, 0.75, 0.5, 0.25, 0)]
    assert np.allclose(sigmas, expected, atol=1e-6)
    (stretched,) = _call("LTXVScheduler", steps=4, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1,
                         latent=latent)
    assert math.isclose(stretched[-2], 0.1, abs_tol=1e-6) and stretched[-1] == 0.0


def test_get_image_size_feeds_other_nodes(sim, ws_factory):
    upload(sim.url, "size.png", png_bytes(72, 40))
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "size.png"}},
        "2": {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": ["2", 1], "height": ["2", 0], "batch_size": 1, "color": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "size"}},
    }
    saved = _executed(_run(sim, ws_factory(sim.url), prompt), "4")["images"][0]
    picture = Image.open(io.BytesIO(requests.get(f"{sim.url}/view", params=saved, timeout=WAIT).content))
    assert picture.size == (40, 72)  # width and height swapped through the links


def test_ltx_video_template_writes_an_animated_webp(demo_sim, ws_factory):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ltx-video-2b-v0.9.5.safetensors"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5xxl_fp16.safetensors", "type": "ltxv"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "waves", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {"class_type": "LTXVConditioning", "inputs": {"positive": ["3", 0], "negative": ["4", 0], "frame_rate": 24.0}},
        "6": {"class_type": "EmptyLTXVLatentVideo", "inputs": {"width": 128, "height": 96, "length": 17, "batch_size": 1}},
        "7": {"class_type": "LTXVScheduler", "inputs": {"steps": 3, "max_shift": 2.05, "base_shift": 0.95,
                                                         "stretch": True, "terminal": 0.1, "latent": ["6", 0]}},
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {"class_type": "SamplerCustom", "inputs": {"model": ["1", 0], "add_noise": True, "noise_seed": 1, "cfg": 3.0,
                                                        "positive": ["5", 0], "negative": ["5", 1], "sampler": ["8", 0],
                                                        "sigmas": ["7", 0], "latent_image": ["6", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["10", 0], "filename_prefix": "clip", "fps": 24.0,
                                                            "lossless": False, "quality": 80, "method": "default"}},
    }
    messages = _run(demo_sim, ws_factory(demo_sim.url), prompt)
    assert [m["data"]["value"] for m in messages if is_type(m, "progress") and m["data"]["node"] == "9"] == [1, 2, 3]
    saved = _executed(messages, "11")["images"][0]
    clip = Image.open(io.BytesIO(requests.get(f"{demo_sim.url}/view", params=saved, timeout=WAIT).content))
    assert clip.size == (128, 96) and clip.n_frames == 17  # (17 - 1) / 8 + 1 latent frames decode to 17


def test_create_video_and_save_video_write_an_mp4_a_browser_plays(demo_sim, ws_factory):
    av = pytest.importorskip("av")
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 12, "color": 0x3366CC}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 12.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/clip", "format": "auto",
                                                    "codec": "auto"}},
    }
    output = _executed(_run(demo_sim, ws_factory(demo_sim.url), prompt), "3")
    assert output == {"images": [{"filename": "clip_00001_.mp4", "subfolder": "video", "type": "output"}],
                      "animated": [True]}  # ui.PreviewVideo
    data = requests.get(f"{demo_sim.url}/view", params=output["images"][0], timeout=WAIT).content
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264" and stream.average_rate == 12
        assert (frames[0].width, frames[0].height, len(frames)) == (96, 64, 12)
        assert "prompt" in container.metadata  # the graph rides along, as in ComfyUI's own files


def test_ace_step_template_writes_a_song_of_the_asked_length(demo_sim, ws_factory):
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ace_step_v1_3.5b.safetensors"}},
        "2": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 5.0}},
        "3": {"class_type": "TextEncodeAceStepAudio", "inputs": {"clip": ["1", 1], "tags": "lofi", "lyrics": "[instrumental]",
                                                                 "lyrics_strength": 0.99}},
        "4": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}},
        "5": {"class_type": "EmptyAceStepLatentAudio", "inputs": {"seconds": 3.0, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0, "model": ["2", 0],
                                                   "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0]}},
        "7": {"class_type": "VAEDecodeAudio", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveAudio", "inputs": {"audio": ["7", 0], "filename_prefix": "song"}},
    }
    saved = _executed(_run(demo_sim, ws_factory(demo_sim.url), prompt), "8")["audio"][0]
    flac = requests.get(f"{demo_sim.url}/view", params=saved, timeout=WAIT).content
    assert flac[:4] == b"fLaC"
    total_samples = int.from_bytes(flac[8 + 10 : 8 + 18], "big") & ((1 << 36) - 1)  # STREAMINFO
    assert total_samples == int(3.0 * 44100 / 4096) * 4096


def test_new_classes_are_in_object_info(demo_sim):
    info = requests.get(f"{demo_sim.url}/object_info", timeout=WAIT).json()
    for class_type in ("StringConcatenate", "ImageBlend", "ImageStitch", "ResizeAndPadImage", "GetImageSize", "Canny",
                       "CLIPLoader", "EmptyLTXVLatentVideo", "SamplerCustom", "EmptyAceStepLatentAudio"):
        assert class_type in info
    assert info["CLIPLoader"]["input"]["required"]["clip_name"][0] == ["t5xxl_fp16.safetensors"]
