"""Nodes that read images from input/ or write them to output/, temp/ or the websocket."""

from __future__ import annotations

import json
import random
import string
from typing import Any

import numpy as np
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from ..files import Folders, file_sha256, save_image_path
from .base import ComboSource, Result, RunContext, node, to_pil

_IMAGE_COMBO = {"image": ComboSource("input_images")}


def _image_exists(folders: Folders, inputs: dict[str, Any]) -> bool | str:
    if not folders.annotated_path(str(inputs["image"])).is_file():
        return f"Invalid image file: {inputs['image']}"
    return True


def _image_hash(folders: Folders, inputs: dict[str, Any]) -> str:
    # LoadImage hashes the file so that re-uploading different bytes under the same name
    # invalidates the cache, exactly like ComfyUI's IS_CHANGED.
    return file_sha256(folders.annotated_path(str(inputs["image"])))


@node(
    "LoadImage",
    validator=_image_exists,
    validated_inputs=("image",),
    is_changed=_image_hash,
    combos=_IMAGE_COMBO,
)
def load_image(ctx: RunContext, image: str) -> tuple[np.ndarray, np.ndarray]:
    img = Image.open(ctx.folders.annotated_path(image))
    frames, masks = [], []
    size = None
    for frame in ImageSequence.Iterator(img):
        frame = ImageOps.exif_transpose(frame)
        if frame.mode == "I":
            frame = frame.point(lambda v: v * (1 / 255))
        rgb = frame.convert("RGB")
        if size is None:
            size = rgb.size
        if rgb.size != size:
            continue  # ComfyUI drops frames whose size differs from the first one
        frames.append(np.asarray(rgb, dtype=np.float32) / 255.0)
        if "A" in frame.getbands():
            masks.append(1.0 - np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0)
        elif frame.mode == "P" and "transparency" in frame.info:
            alpha = frame.convert("RGBA").getchannel("A")
            masks.append(1.0 - np.asarray(alpha, dtype=np.float32) / 255.0)
        else:
            masks.append(np.zeros((64, 64), dtype=np.float32))
        if img.format == "MPO":
            break
    if len(set(m.shape for m in masks)) > 1:
        masks = [m if m.shape != (64, 64) else np.zeros(frames[0].shape[:2], np.float32) for m in masks]
    return np.stack(frames), np.stack(masks)


@node(
    "LoadImageMask",
    validator=_image_exists,
    validated_inputs=("image",),
    is_changed=_image_hash,
    combos=_IMAGE_COMBO,
)
def load_image_mask(ctx: RunContext, image: str, channel: str) -> tuple[np.ndarray]:
    img = ImageOps.exif_transpose(Image.open(ctx.folders.annotated_path(image)))
    if img.getbands() != ("R", "G", "B", "A"):
        if img.mode == "I":
            img = img.point(lambda v: v * (1 / 255))
        img = img.convert("RGBA")
    band = channel[0].upper()
    if band in img.getbands():
        mask = np.asarray(img.getchannel(band), dtype=np.float32) / 255.0
        if band == "A":
            mask = 1.0 - mask
    else:
        mask = np.zeros((64, 64), dtype=np.float32)
    return (mask[None, ...],)


def _png_metadata(ctx: RunContext) -> PngInfo:
    info = PngInfo()
    info.add_text("prompt", json.dumps(ctx.prompt))
    for key, value in (ctx.extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def _save_pngs(ctx: RunContext, images: np.ndarray, prefix: str, kind: str, level: int) -> Result:
    base = ctx.folders.output if kind == "output" else ctx.folders.temp
    folder, stem, counter, subfolder = save_image_path(prefix, base, images.shape[2], images.shape[1])
    results = []
    for batch_number, image in enumerate(images):
        name = stem.replace("%batch_num%", str(batch_number))
        filename = f"{name}_{counter:05}_.png"
        to_pil(image).save(folder / filename, pnginfo=_png_metadata(ctx), compress_level=level)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
        counter += 1
    return Result(ui={"images": results})


@node("SaveImage", hidden=("prompt", "extra_pnginfo"))
def save_image(ctx: RunContext, images: np.ndarray, filename_prefix: str = "ComfyUI") -> Result:
    return _save_pngs(ctx, images, filename_prefix, "output", 4)


@node("PreviewImage", hidden=("prompt", "extra_pnginfo"))
def preview_image(ctx: RunContext, images: np.ndarray) -> Result:
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return _save_pngs(ctx, images, f"ComfyUI_temp_{suffix}", "temp", 1)


@node("SaveImageWebsocket")
def save_image_websocket(ctx: RunContext, images: np.ndarray) -> Result:
    # The bundled custom node: every image becomes a preview frame plus a `progress`
    # message (values 0..n-1 of max n); no file, empty history outputs.
    total = images.shape[0]
    for step, image in enumerate(images):
        ctx.progress(step, total, to_pil(image), fmt="PNG")
    return Result()


@node("SaveAnimatedWEBP", hidden=("prompt", "extra_pnginfo"))
def save_animated_webp(
    ctx: RunContext,
    images: np.ndarray,
    filename_prefix: str,
    fps: float,
    lossless: bool,
    quality: int,
    method: str,
) -> Result:
    methods = {"default": 4, "fastest": 0, "slowest": 6}
    folder, stem, counter, subfolder = save_image_path(
        filename_prefix, ctx.folders.output, images.shape[2], images.shape[1]
    )
    frames = [to_pil(image) for image in images]
    filename = f"{stem}_{counter:05}_.webp"
    frames[0].save(
        folder / filename,
        save_all=True,
        duration=int(1000.0 / fps),
        append_images=frames[1:],
        lossless=lossless,
        quality=quality,
        method=methods[method],
    )
    ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}
    return Result(ui=ui)

