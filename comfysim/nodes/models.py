"""Simulated model nodes: same class names, inputs and outputs as ComfyUI, no weights.

Loaders hand out small descriptors instead of weights. KSampler spends ``step_seconds`` per
step with one ``progress`` message each and produces a latent that is a deterministic
function of seed, prompts, model and settings; VAEDecode turns it into a smooth colour picture
that is visibly different per seed. Simulated VRAM: a sampler, decoder or upscaler whose
working set exceeds ``vram_total_bytes`` fails with the CUDA out-of-memory error shape.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from ..errors import SimulatedOutOfMemory
from .base import ComboSource, RunContext, node, resize

GIB = 1024**3
# Working memory per output pixel while sampling (activations, attention); 512x512 ~ 0.5 GiB,
# 1024x1024 ~ 2 GiB, which with an SDXL checkpoint reproduces the usual 8 GB card limit.
SAMPLING_BYTES_PER_PIXEL = 2048
DECODE_BYTES_PER_PIXEL = 1024
UPSCALE_TILE = 512
UPSCALE_OVERLAP = 32

# Fixed latent -> RGB projection (the shape of ComfyUI's latent2rgb factors).
_LATENT_RGB = np.array(
    [[0.80, 0.20, -0.30, 0.30], [-0.20, 0.70, 0.30, 0.20], [0.30, -0.30, 0.80, -0.20]], dtype=np.float32
)


def checkpoint_bytes(name: str) -> int:
    lowered = name.lower()
    if "flux" in lowered:
        return 12 * GIB
    if "xl" in lowered:
        return int(6.5 * GIB)
    if "audio" in lowered:
        return 3 * GIB
    return 2 * GIB


@dataclass(frozen=True)
class Model:
    checkpoint: str
    loras: tuple[tuple[str, float], ...] = ()
    #: Sampling patches (ModelSamplingSD3 shift ...), part of what makes a result differ.
    patches: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Clip:
    checkpoint: str
    loras: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Vae:
    checkpoint: str


@dataclass(frozen=True)
class ControlNet:
    name: str


@dataclass(frozen=True)
class Control:
    name: str
    strength: float
    image: Any  # IMAGE array the picture is pulled towards


@dataclass(frozen=True)
class Conditioning:
    text: str
    clip: Clip
    controls: tuple[Control, ...] = ()
    #: Extra conditioning values (LTXV frame rate, ACE lyrics strength ...).
    settings: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class UpscaleModel:
    name: str
    scale: int


def stable_seed(*parts: Any) -> int:
    """A seed from values, stable across processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def require_vram(ctx: RunContext, needed: int) -> None:
    total = ctx.config.vram_total_bytes
    if needed > total:
        used = sum(ctx.models_loaded.values())
        free = max(total - used, 0)
        raise SimulatedOutOfMemory(
            f"CUDA out of memory. Tried to allocate {needed / GIB:.2f} GiB. GPU 0 has a total "
            f"capacity of {total / GIB:.2f} GiB of which {free / GIB:.2f} GiB is free."
        )


def latent_pixels(samples: np.ndarray) -> int:
    """Output pixels a latent stands for (each latent cell is 8x8 pixels; for a video latent
    ``[B, C, T, h, w]`` this counts cells over time, a proxy for its working set)."""
    return int(np.prod(samples.shape[:1] + samples.shape[2:])) * 64


def is_image_latent(latent: dict[str, Any]) -> bool:
    """A ``[B, 4, h, w]`` picture latent (not audio, whose ACE-Step latent is 4-D too, nor video)."""
    return latent["samples"].ndim == 4 and latent.get("type") != "audio"


@node("CheckpointLoaderSimple", combos={"ckpt_name": ComboSource("models", "checkpoints")})
def checkpoint_loader(ctx: RunContext, ckpt_name: str) -> tuple[Model, Clip, Vae]:
    require_vram(ctx, checkpoint_bytes(ckpt_name))
    ctx.models_loaded[ckpt_name] = checkpoint_bytes(ckpt_name)
    return Model(ckpt_name), Clip(ckpt_name), Vae(ckpt_name)


@node("LoraLoader", combos={"lora_name": ComboSource("models", "loras")})
def lora_loader(
    ctx: RunContext, model: Model, clip: Clip, lora_name: str, strength_model: float, strength_clip: float
) -> tuple[Model, Clip]:
    if strength_model == 0 and strength_clip == 0:
        return model, clip
    return (
        replace(model, loras=model.loras + ((lora_name, strength_model),)),
        replace(clip, loras=clip.loras + ((lora_name, strength_clip),)),
    )


@node("ModelSamplingSD3")
def model_sampling_sd3(ctx: RunContext, model: Model, shift: float) -> tuple[Model]:
    return (replace(model, patches=model.patches + (("sd3_shift", shift),)),)


@node("ConditioningZeroOut")
def conditioning_zero_out(ctx: RunContext, conditioning: Conditioning) -> tuple[Conditioning]:
    return (replace(conditioning, text="", controls=(), settings=(("zero_out", 1.0),)),)


@node("CLIPTextEncode")
def clip_text_encode(ctx: RunContext, text: str, clip: Clip) -> tuple[Conditioning]:
    return (Conditioning(text, clip),)


@node("ControlNetLoader", combos={"control_net_name": ComboSource("models", "controlnet")})
def controlnet_loader(ctx: RunContext, control_net_name: str) -> tuple[ControlNet]:
    return (ControlNet(control_net_name),)


@node("ControlNetApplyAdvanced")
def controlnet_apply_advanced(
    ctx: RunContext,
    positive: Conditioning,
    negative: Conditioning,
    control_net: ControlNet,
    image: np.ndarray,
    strength: float,
    start_percent: float,
    end_percent: float,
    vae: Vae | None = None,
) -> tuple[Conditioning, Conditioning]:
    if strength == 0:
        return positive, negative
    control = Control(control_net.name, strength, image)
    return (
        replace(positive, controls=positive.controls + (control,)),
        replace(negative, controls=negative.controls + (control,)),
    )


@node("EmptyLatentImage")
def empty_latent_image(ctx: RunContext, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, Any]]:
    return ({"samples": np.zeros((batch_size, 4, height // 8, width // 8), dtype=np.float32)},)


def _target_latent(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth noise: coarse Gaussian noise upsampled, so decoded pictures show colour blobs."""
    rng = np.random.default_rng(seed)
    if len(shape) == 5:  # video [B, C, T, h, w]: morph between two smooth fields over time
        first, last = (_target_latent(shape[:2] + shape[3:], seed + k) for k in (0, 1))
        weights = np.linspace(0.0, 1.0, shape[2], dtype=np.float32)[None, None, :, None, None]
        return (first[:, :, None] * (1 - weights) + last[:, :, None] * weights).astype(np.float32)
    if len(shape) != 4:  # audio latents [B, C, L]
        return rng.standard_normal(shape).astype(np.float32)
    batch, channels, height, width = shape
    coarse = rng.standard_normal((batch, max(height // 4, 2), max(width // 4, 2), channels)).astype(np.float32)
    return resize(coarse, width, height, "bilinear").transpose(0, 3, 1, 2) * 1.5


def _apply_controls(latent: np.ndarray, controls: tuple[Control, ...]) -> np.ndarray:
    """Pull the latent towards each control image so guided pictures follow their guide."""
    for control in controls:
        luminance = control.image[..., :3].mean(axis=3)
        guide = resize(luminance[:1], latent.shape[3], latent.shape[2], "area")[0]
        latent = latent + min(control.strength, 2.0) * (guide - 0.5) * 2.0
    return latent


def latent_preview(samples: np.ndarray) -> Image.Image:
    """A latent2rgb-style preview of the first latent of the batch."""
    rgb = np.tensordot(_LATENT_RGB, samples[0], axes=(1, 0)).transpose(1, 2, 0)
    pixels = np.clip((0.5 + 0.5 * np.tanh(rgb)) * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def sample_latent(
    ctx: RunContext,
    model: Model,
    seed: int,
    steps: int,
    settings: tuple[Any, ...],
    positive: Conditioning,
    negative: Conditioning,
    latent_image: dict[str, Any],
    denoise: float,
    first_step: int = 0,
    last_step: int | None = None,
) -> dict[str, Any]:
    source = latent_image["samples"]
    require_vram(ctx, checkpoint_bytes(model.checkpoint) + latent_pixels(source) * SAMPLING_BYTES_PER_PIXEL)
    key = stable_seed(ctx.config.seed, seed, model, positive.text, negative.text, positive.settings, settings, source.shape)
    target = _apply_controls(_target_latent(source.shape, key), positive.controls)
    if denoise < 1.0:
        target = denoise * target + (1.0 - denoise) * source
    if "noise_mask" in latent_image and is_image_latent(latent_image):
        mask = resize(latent_image["noise_mask"][:, 0], source.shape[3], source.shape[2], "bilinear")
        target = mask[:, None] * target + (1.0 - mask[:, None]) * source
    end = steps if last_step is None else min(last_step, steps)
    total = max(end - first_step, 0)
    current = source
    for step in range(1, total + 1):
        ctx.wait_step()
        current = source + (target - source) * (step / total)
        preview = latent_preview(current) if ctx.config.previews and is_image_latent(latent_image) else None
        ctx.progress(step, total, preview)
    out = dict(latent_image)
    out.pop("noise_mask", None)
    out["samples"] = current.astype(np.float32)
    return out


@node("KSampler")
def ksampler(
    ctx: RunContext,
    model: Model,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: dict[str, Any],
    denoise: float = 1.0,
) -> tuple[dict[str, Any]]:
    settings = (steps, cfg, sampler_name, scheduler, denoise)
    return (sample_latent(ctx, model, seed, steps, settings, positive, negative, latent_image, denoise),)


@node("KSamplerAdvanced")
def ksampler_advanced(
    ctx: RunContext,
    model: Model,
    add_noise: str,
    noise_seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Conditioning,
    negative: Conditioning,
    latent_image: dict[str, Any],
    start_at_step: int,
    end_at_step: int,
    return_with_leftover_noise: str,
) -> tuple[dict[str, Any]]:
    settings = (steps, cfg, sampler_name, scheduler, add_noise, start_at_step, end_at_step)
    latent = sample_latent(
        ctx, model, noise_seed, steps, settings, positive, negative, latent_image, 1.0, start_at_step, end_at_step
    )
    return (latent,)


def _decode_pixels(latent: np.ndarray, scale: int) -> np.ndarray:
    rgb = np.tensordot(latent[:, :4], _LATENT_RGB, axes=(1, 1))  # [B, h, w, 3]
    small = (0.5 + 0.5 * np.tanh(rgb)).astype(np.float32)
    return resize(small, latent.shape[3] * scale, latent.shape[2] * scale, "bilinear")


def _decode_video(latent: np.ndarray) -> np.ndarray:
    """LTXV's VAE: each latent frame after the first stands for 8 frames of 32x32-pixel cells;
    ComfyUI returns the frames of every video as one IMAGE batch."""
    cells = latent.shape[2]
    frames = (cells - 1) * 8 + 1
    positions = np.linspace(0, cells - 1, frames)
    out = []
    for video in latent:
        for position in positions:
            low = int(np.floor(position))
            high = min(low + 1, cells - 1)
            mix = video[:, low] * (1 - (position - low)) + video[:, high] * (position - low)
            out.append(_decode_pixels(mix[None], 32)[0])
    return np.stack(out)


@node("VAEDecode")
def vae_decode(ctx: RunContext, samples: dict[str, Any], vae: Vae) -> tuple[np.ndarray]:
    latent = samples["samples"]
    if latent.ndim == 5:
        # Video VAEs decode in temporal chunks, so memory follows one chunk, not the clip.
        require_vram(ctx, latent_pixels(latent[:, :, :1]) * 16 * DECODE_BYTES_PER_PIXEL)
        return (_decode_video(latent),)
    require_vram(ctx, latent_pixels(latent) * DECODE_BYTES_PER_PIXEL)
    return (_decode_pixels(latent, 8),)


def _encode(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[1] // 8, pixels.shape[2] // 8
    small = resize(pixels[..., :3], max(width, 1), max(height, 1), "area")
    rgb = np.arctanh(np.clip(small * 2.0 - 1.0, -0.999, 0.999))
    return np.tensordot(rgb, np.linalg.pinv(_LATENT_RGB), axes=(3, 1)).transpose(0, 3, 1, 2).astype(np.float32)


@node("VAEEncode")
def vae_encode(ctx: RunContext, pixels: np.ndarray, vae: Vae) -> tuple[dict[str, Any]]:
    require_vram(ctx, pixels.shape[0] * pixels.shape[1] * pixels.shape[2] * DECODE_BYTES_PER_PIXEL)
    return ({"samples": _encode(pixels)},)


@node("VAEEncodeForInpaint")
def vae_encode_for_inpaint(
    ctx: RunContext, pixels: np.ndarray, vae: Vae, mask: np.ndarray, grow_mask_by: int = 6
) -> tuple[dict[str, Any]]:
    height, width = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
    pixels = pixels[:, :height, :width, :]
    flat = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
    noise_mask = np.clip(resize(flat, width, height, "bilinear"), 0.0, 1.0)
    if grow_mask_by > 0:
        # Dilation by a square kernel, like ComfyUI's conv2d with a ones kernel then clamp.
        padded = np.pad(noise_mask, ((0, 0), (grow_mask_by, grow_mask_by), (grow_mask_by, grow_mask_by)))
        grown = np.zeros_like(noise_mask)
        for dy in range(0, 2 * grow_mask_by + 1, max(1, grow_mask_by // 2)):
            for dx in range(0, 2 * grow_mask_by + 1, max(1, grow_mask_by // 2)):
                grown = np.maximum(grown, padded[:, dy : dy + height, dx : dx + width])
        noise_mask = grown
    return ({"samples": _encode(pixels), "noise_mask": noise_mask[:, None]},)


@node("UpscaleModelLoader", combos={"model_name": ComboSource("models", "upscale_models")})
def upscale_model_loader(ctx: RunContext, model_name: str) -> tuple[UpscaleModel]:
    match = re.search(r"(\d)x|x(\d)", model_name.lower())
    scale = int(next(g for g in match.groups() if g)) if match else 4
    return (UpscaleModel(model_name, scale),)


@node("ImageUpscaleWithModel")
def image_upscale_with_model(ctx: RunContext, upscale_model: UpscaleModel, image: np.ndarray) -> tuple[np.ndarray]:
    batch, height, width = image.shape[:3]
    require_vram(ctx, batch * height * width * upscale_model.scale**2 * 64)
    # One progress step per tile, as ComfyUI's tiled upscale reports.
    step = UPSCALE_TILE - UPSCALE_OVERLAP
    tiles = batch * math.ceil(height / step) * math.ceil(width / step)
    for tile in range(1, tiles + 1):
        ctx.wait_step()
        ctx.progress(tile, tiles)
    scale = upscale_model.scale
    return (resize(image, width * scale, height * scale, "bicubic"),)
