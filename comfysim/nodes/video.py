"""Simulated LTX-Video nodes (comfy_extras/nodes_lt.py) and the custom-sampling nodes its
template uses. Latent shapes and the scheduler's sigmas follow ComfyUI exactly; sampling and
decoding are simulated like the picture models (see ``models``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .base import ComboSource, RunContext, node
from .models import Clip, Conditioning, Model, sample_latent

LTXV_CHANNELS = 128
LTXV_TIME_STRIDE = 8  # frames per latent frame after the first
LTXV_SPACE_STRIDE = 32  # pixels per latent cell


@dataclass(frozen=True)
class Sampler:
    name: str


@node("CLIPLoader", combos={"clip_name": ComboSource("models", "text_encoders")})
def clip_loader(ctx: RunContext, clip_name: str, type: str, device: str = "default") -> tuple[Clip]:
    return (Clip(clip_name),)


@node("EmptyLTXVLatentVideo")
def empty_ltxv_latent_video(
    ctx: RunContext, width: int, height: int, length: int, batch_size: int = 1
) -> tuple[dict[str, Any]]:
    frames = (length - 1) // LTXV_TIME_STRIDE + 1
    shape = (batch_size, LTXV_CHANNELS, frames, height // LTXV_SPACE_STRIDE, width // LTXV_SPACE_STRIDE)
    return ({"samples": np.zeros(shape, dtype=np.float32)},)


@node("LTXVConditioning")
def ltxv_conditioning(
    ctx: RunContext, positive: Conditioning, negative: Conditioning, frame_rate: float
) -> tuple[Conditioning, Conditioning]:
    setting = (("frame_rate", frame_rate),)
    return replace(positive, settings=positive.settings + setting), replace(negative, settings=negative.settings + setting)


@node("LTXVScheduler")
def ltxv_scheduler(
    ctx: RunContext,
    steps: int,
    max_shift: float,
    base_shift: float,
    stretch: bool,
    terminal: float,
    latent: dict[str, Any] | None = None,
) -> tuple[np.ndarray]:
    # ComfyUI's arithmetic: the shift grows with the number of latent tokens.
    tokens = 4096 if latent is None else math.prod(latent["samples"].shape[2:])
    sigmas = np.linspace(1.0, 0.0, steps + 1)
    slope = (max_shift - base_shift) / (4096 - 1024)
    shift = tokens * slope + base_shift - slope * 1024
    with np.errstate(divide="ignore"):
        shifted = math.exp(shift) / (math.exp(shift) + (1 / sigmas - 1))
    sigmas = np.where(sigmas != 0, shifted, 0.0)
    if stretch:
        nonzero = sigmas != 0
        one_minus = 1.0 - sigmas[nonzero]
        sigmas[nonzero] = 1.0 - one_minus / (one_minus[-1] / (1.0 - terminal))
    return (sigmas.astype(np.float32),)


@node("KSamplerSelect")
def ksampler_select(ctx: RunContext, sampler_name: str) -> tuple[Sampler]:
    return (Sampler(sampler_name),)


@node("SamplerCustom")
def sampler_custom(
    ctx: RunContext,
    model: Model,
    add_noise: bool,
    noise_seed: int,
    cfg: float,
    positive: Conditioning,
    negative: Conditioning,
    sampler: Sampler,
    sigmas: np.ndarray,
    latent_image: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    steps = len(sigmas) - 1
    settings = (cfg, sampler.name, add_noise, tuple(np.round(sigmas, 4).tolist()))
    out = sample_latent(ctx, model, noise_seed, steps, settings, positive, negative, latent_image, 1.0)
    return out, out  # output and denoised_output coincide once sampling reaches sigma 0
