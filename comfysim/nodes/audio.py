"""Audio nodes for the music workflows: empty audio latents (Stable Audio and ACE-Step), the
ACE-Step text encoder, a decoder that synthesises a short deterministic piece from the sampled
latent, and SaveAudio writing a real FLAC file."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..files import save_image_path
from ..flac import write_flac
from .base import Result, RunContext, node
from .models import Clip, Conditioning, Vae, stable_seed

SAMPLE_RATE = 44100
LATENT_HOP = 2048  # audio samples per latent step, as Stable Audio's VAE
ACE_LATENT_HOP = 512 * 8  # ACE-Step: [B, 8, 16, L] with L = seconds * 44100 / 512 / 8


@node("EmptyLatentAudio")
def empty_latent_audio(ctx: RunContext, seconds: float, batch_size: int = 1) -> tuple[dict[str, Any]]:
    length = round(seconds * SAMPLE_RATE / LATENT_HOP)
    return ({"samples": np.zeros((batch_size, 64, length), dtype=np.float32), "type": "audio"},)


@node("EmptyAceStepLatentAudio")
def empty_ace_step_latent_audio(ctx: RunContext, seconds: float, batch_size: int = 1) -> tuple[dict[str, Any]]:
    length = int(seconds * SAMPLE_RATE / ACE_LATENT_HOP)
    return ({"samples": np.zeros((batch_size, 8, 16, length), dtype=np.float32), "type": "audio"},)


@node("TextEncodeAceStepAudio")
def text_encode_ace_step_audio(
    ctx: RunContext, clip: Clip, tags: str, lyrics: str, lyrics_strength: float
) -> tuple[Conditioning]:
    return (Conditioning(f"{tags}\n{lyrics}", clip, settings=(("lyrics_strength", lyrics_strength),)),)


@node("VAEDecodeAudio")
def vae_decode_audio(ctx: RunContext, samples: dict[str, Any], vae: Vae) -> tuple[dict[str, Any]]:
    latent = samples["samples"]
    count = latent.shape[-1] * (ACE_LATENT_HOP if latent.ndim == 4 else LATENT_HOP)
    t = np.arange(count, dtype=np.float32) / SAMPLE_RATE
    waves = []
    for item in latent:
        # A chord whose root and rhythm come from the latent, so each seed sounds different.
        rng = np.random.default_rng(stable_seed(item.tobytes()[:4096]))
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        notes = [root * 2 ** (step / 12) for step in (0, 4, 7, 12)]
        beat = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t) ** 2
        tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, np.pi)) for f in notes) / len(notes)
        mono = (0.4 * beat * tone).astype(np.float32)
        waves.append(np.stack([mono, np.roll(mono, 64)]))
    return ({"waveform": np.stack(waves), "sample_rate": SAMPLE_RATE},)


@node("SaveAudio", hidden=("prompt", "extra_pnginfo"))
def save_audio(ctx: RunContext, audio: dict[str, Any], filename_prefix: str = "audio/ComfyUI") -> Result:
    folder, stem, counter, subfolder = save_image_path(filename_prefix, ctx.folders.output, 0, 0)
    results = []
    for batch_number, waveform in enumerate(audio["waveform"]):
        name = stem.replace("%batch_num%", str(batch_number))
        filename = f"{name}_{counter:05}_.flac"
        write_flac(folder / filename, waveform, audio["sample_rate"])
        results.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        counter += 1
    return Result(ui={"audio": results})
