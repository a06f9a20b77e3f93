"""The shipped workflow library: every spec passes ``workflows check`` against the real node
schema, needs only files the demo node has, and every graph validates and runs on comfysim.

Each prompt is built the way the dispatcher builds it (validated values, uploaded file names)
and submitted over HTTP; inputs go through ``/upload/image`` and, for masks, ``/upload/mask``
with the image as ``original_ref``, exactly as the agent uploads them.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from backend.errors import GuardRejected
from backend.workflows import (
    InputFacts,
    Library,
    WorkflowSpec,
    build_prompt,
    check_spec,
    quote,
    validate_params,
)
from comfysim import DEMO_MODELS, SimConfig, SimHandle, start_sim
from comfysim.nodes import REGISTRY

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
LIBRARY = Library.load(WORKFLOWS)
WAIT = 20.0

#: Small, fast values per workflow (expert mode); everything else keeps its default.
FAST: dict[str, dict[str, Any]] = {
    "txt2img-sd15": {"prompt": "a cat", "steps": 2, "width": 256, "height": 256},
    "txt2img-sdxl": {"prompt": "a fox", "steps": 2, "width": 640, "height": 640},
    "img2img-sd15": {"prompt": "oil painting", "steps": 2, "megapixels": 0.1},
    "inpaint-sd15": {"prompt": "a vase", "steps": 2},
    "outpaint-sd15": {"prompt": "a valley", "steps": 2, "left": 32, "right": 32, "top": 0, "bottom": 0},
    "lineart-to-photo": {"prompt": "a house", "steps": 2, "width": 256, "height": 256},
    "ai-portrait": {"steps": 2},
    "txt2video-ltxv": {"prompt": "waves", "steps": 4, "width": 256, "height": 256, "frames": 9},
    "music-ace-step": {"seconds": 10, "steps": 10},
    "photo-crop": {"x": 8, "y": 8, "width": 64, "height": 48},
    "photo-resize": {"width": 200},
    "photo-pad": {"width": 256, "height": 256},
    "photo-blur": {"radius": 3},
}
#: Workflows whose graphs need no model file at all: they run on any ComfyUI.
MODEL_FREE = {"invert-scale", "photo-resize", "photo-crop", "photo-rotate", "photo-flip", "photo-blur",
              "photo-sharpen", "photo-pad", "photo-stitch"}


def _png(size: tuple[int, int] = (160, 128), mode: str = "RGB", seed: int = 0) -> bytes:
    image = Image.new(mode, size, (200, 180, 150, 255)[: len(mode)])
    draw = ImageDraw.Draw(image)
    draw.ellipse((20 + seed, 20, 120, 100), fill=(40, 60, 160, 255)[: len(mode)])
    draw.line((0, 0, size[0], size[1]), fill=(10, 10, 10, 255)[: len(mode)], width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _mask_png(size: tuple[int, int] = (160, 128)) -> bytes:
    """A drawn mask as the studio stores it: transparent (alpha 0) where the creator painted."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((40, 30, 110, 90), fill=(0, 0, 0, 0))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    return json.loads((REPO / "comfysim" / "object_info.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo_sim() -> Iterator[SimHandle]:
    handle = start_sim(SimConfig(models={k: list(v) for k, v in DEMO_MODELS.items()}, step_seconds=0))
    yield handle
    handle.stop()


def _upload(url: str, name: str, data: bytes, *, original: str | None = None) -> str:
    fields = {"subfolder": "studio", "overwrite": "true"}
    route = "/upload/image"
    if original is not None:
        route = "/upload/mask"
        fields["original_ref"] = json.dumps({"filename": original, "subfolder": "studio", "type": "input"})
    response = requests.post(f"{url}{route}", files={"image": (name, data, "image/png")}, data=fields, timeout=WAIT)
    assert response.status_code == 200, response.text
    return f"studio/{response.json()['name']}"


def _upload_inputs(url: str, spec: WorkflowSpec) -> dict[str, str]:
    """Upload every file parameter (images before the masks drawn on them)."""
    names: dict[str, str] = {}
    for index, param in enumerate(p for p in spec.file_params if p.type == "image"):
        names[param.name] = _upload(url, f"{spec.name}-{param.name}.png", _png(seed=index * 10))
    for param in (p for p in spec.file_params if p.type == "mask"):
        original = names[param.mask_of].split("/", 1)[1] if param.mask_of else None
        names[param.name] = _upload(url, f"{spec.name}-{param.name}.png", _mask_png(), original=original)
    return names


def _wait_history(url: str, prompt_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        entry = requests.get(f"{url}/history/{prompt_id}", timeout=WAIT).json().get(prompt_id)
        if entry and entry["status"]["completed"] or entry and entry["status"]["status_str"] == "error":
            return entry
        time.sleep(0.05)
    raise AssertionError(f"prompt {prompt_id} did not finish within {WAIT} s")


def test_library_covers_the_common_jobs() -> None:
    categories = {spec.category for spec in LIBRARY}
    assert {"text-to-image", "image-to-image", "photography", "upscale", "text-to-video", "music", "tool"} <= categories
    assert len(LIBRARY) >= 18


@pytest.mark.parametrize("name", LIBRARY.names())
def test_spec_fits_the_real_schema_and_the_demo_node(name: str, object_info: dict[str, Any]) -> None:
    spec = LIBRARY.get(name)
    assert check_spec(spec, object_info) == []
    assert spec.node_classes <= REGISTRY.keys(), "comfysim must implement every class the graph uses"
    assert spec.example is not None and spec.example.stat().st_size < 100_000
    assert any(p.beginner for p in spec.params) and spec.stages
    assert all(p.label.zh and p.label.en for p in spec.params)
    slot_files = {(slot.folder, option) for slot in spec.model_slots for option in spec.param(slot.param).options}
    needed = {(m.folder, m.file) for m in spec.models} | slot_files
    assert all(file in DEMO_MODELS.get(folder, []) for folder, file in needed), needed
    assert (not needed) == (name in MODEL_FREE)


@pytest.mark.parametrize("name", LIBRARY.names())
def test_graph_validates_and_runs_on_comfysim(name: str, demo_sim: SimHandle) -> None:
    spec = LIBRARY.get(name)
    values = validate_params(spec, {**{p.name: "x" for p in spec.file_params}, **FAST.get(name, {})}, expert=True)
    prompt = build_prompt(spec, values, uploads=_upload_inputs(demo_sim.url, spec), filename_prefix=f"studio/{name}")
    response = requests.post(f"{demo_sim.url}/prompt", json={"prompt": prompt}, timeout=WAIT)
    assert response.status_code == 200, response.text
    assert response.json()["node_errors"] == {}
    entry = _wait_history(demo_sim.url, response.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    for output in spec.outputs:
        ui = entry["outputs"][output.graph_node]
        files = ui.get("audio") if output.kind == "audio" else ui.get("images")
        assert files and files[0]["filename"].startswith(name)


def test_inpainting_repaints_only_the_drawn_area(demo_sim: SimHandle) -> None:
    spec = LIBRARY.get("inpaint-sd15")
    values = validate_params(spec, {"image": "a", "mask": "b", "prompt": "x", "steps": 2}, expert=True)
    prompt = build_prompt(spec, values, uploads=_upload_inputs(demo_sim.url, spec), filename_prefix="studio/mask-check")
    assert prompt["1"]["inputs"]["image"].endswith("inpaint-sd15-mask.png")  # the merged file
    prompt_id = requests.post(f"{demo_sim.url}/prompt", json={"prompt": prompt}, timeout=WAIT).json()["prompt_id"]
    saved = _wait_history(demo_sim.url, prompt_id)["outputs"]["9"]["images"][0]
    result = Image.open(io.BytesIO(requests.get(f"{demo_sim.url}/view", params=saved, timeout=WAIT).content))
    original = Image.open(io.BytesIO(_png())).convert("RGB")
    assert result.getpixel((5, 120)) == original.getpixel((5, 120))  # outside the mask: untouched
    assert result.getpixel((75, 60)) != original.getpixel((75, 60))  # inside: repainted


# -- the upscaling guard: "up to 8x, but at 8x the input may be at most 512x512" --------------


def _upscale_quote(width: int, height: int, factor: float) -> Any:
    spec = LIBRARY.get("upscale-model")
    values = validate_params(spec, {"image": "a" * 64, "factor": factor})
    return quote(spec, values, {"image": InputFacts(width=width, height=height)})


def test_upscale_guard_accepts_512_square_at_8x() -> None:
    _upscale_quote(512, 512, 8).check()
    _upscale_quote(1024, 1024, 4).check()
    _upscale_quote(2048, 2048, 2).check()


def test_upscale_guard_rejects_513x512_at_8x_saying_how_to_shrink() -> None:
    with pytest.raises(GuardRejected) as caught:
        _upscale_quote(513, 512, 8).check()
    message = str(caught.value)
    assert "At 8x the picture may be at most 512x512" in message and "yours is 513x512" in message
    assert "Shrink it to 512x511 or smaller" in message and "factor of at most 7.5" in message
    assert "放大 8 倍时，图片最大为 512x512" in caught.value.zh
    with pytest.raises(GuardRejected, match="at most 2048x2048"):
        _upscale_quote(2100, 2100, 1).check()


def test_upscale_factor_reaches_the_graph_divided_by_the_model_scale() -> None:
    spec = LIBRARY.get("upscale-model")
    values = validate_params(spec, {"image": "a" * 64, "factor": 8})
    prompt = build_prompt(spec, values, uploads={"image": "studio/x.png"})
    assert prompt["4"]["inputs"]["scale_by"] == 2.0 and prompt["2"]["inputs"]["model_name"] == "RealESRGAN_x4plus.pth"
