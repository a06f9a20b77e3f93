"""Settings of one simulated ComfyUI node, and how they are read from TOML.

The defaults describe a fresh ComfyUI install (no model files, previews off, 100 MB upload cap)
so a client tested against the default sim meets the same "value not in list" failures a new
host gives. ``DEMO_MODELS`` lists typical files for demos and benchmarks.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .faults import Faults

GIB = 1024**3

# Model folders a real ComfyUI knows (GET /models lists them even when they are empty).
MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)

# Every model file the shipped workflow library (workflows/) needs, plus a few extras, so a
# demo node can run every workflow.
DEMO_MODELS: dict[str, list[str]] = {
    "checkpoints": [
        "v1-5-pruned-emaonly.safetensors",
        "sd_xl_base_1.0.safetensors",
        "sd-v1-5-inpainting.ckpt",
        "realisticVisionV60B1_v51VAE.safetensors",
        "ltx-video-2b-v0.9.5.safetensors",
        "ace_step_v1_3.5b.safetensors",
        "stable-audio-open-1.0.safetensors",
    ],
    "text_encoders": ["t5xxl_fp16.safetensors"],
    "loras": ["add_detail.safetensors", "pixel-art-xl.safetensors"],
    "controlnet": [
        "control_v11p_sd15_lineart.pth",
        "control_v11p_sd15_canny.pth",
        "control_v11p_sd15_openpose.pth",
        "control_v11f1p_sd15_depth.pth",
    ],
    "upscale_models": ["RealESRGAN_x4plus.pth", "4x-UltraSharp.pth"],
    "vae": ["vae-ft-mse-840000-ema-pruned.safetensors"],
}


@dataclass
class SimConfig:
    """Everything that makes one simulated node differ from another.

    ``models`` maps a model folder (``checkpoints``, ``loras``, ``controlnet``,
    ``upscale_models`` ...) to the file names the node pretends to have. ``data_dir`` holds
    ``input/``, ``output/`` and ``temp/``; ``None`` means a fresh temporary directory.
    """

    models: dict[str, list[str]] = field(default_factory=dict)
    vram_total_bytes: int = 24 * GIB
    step_seconds: float = 0.02
    startup_delay: float = 0.0
    previews: bool = False
    max_upload_size: int = 100 * 1024 * 1024
    seed: int = 0
    data_dir: Path | None = None
    faults: Faults = field(default_factory=Faults)

    def __post_init__(self) -> None:
        if self.vram_total_bytes <= 0:
            raise ConfigError("vram_total_bytes must be positive")
        if self.step_seconds < 0 or self.startup_delay < 0:
            raise ConfigError("step_seconds and startup_delay cannot be negative")
        if self.max_upload_size <= 0:
            raise ConfigError("max_upload_size must be positive")
        for folder, files in self.models.items():
            if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                raise ConfigError(f"models.{folder} must be a list of file names")
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)

    def model_files(self, folder: str) -> list[str]:
        """Files of one model folder, sorted like ComfyUI's folder listing."""
        return sorted(self.models.get(folder, []))

    def replace(self, **changes: Any) -> SimConfig:
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path) -> SimConfig:
    """Read a TOML file (format in docs/comfysim.md) into a ``SimConfig``."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read sim config {path}: {exc}") from None
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> SimConfig:
    """Build a config from plain data; ``preset = "demo"`` starts from ``DEMO_MODELS``."""
    raw = dict(raw)
    preset = raw.pop("preset", None)
    if preset not in (None, "demo"):
        raise ConfigError(f"unknown preset {preset!r} (known: 'demo')")
    models: dict[str, list[str]] = {k: list(v) for k, v in DEMO_MODELS.items()} if preset else {}
    models.update(raw.pop("models", {}) or {})
    faults = Faults.from_dict(raw.pop("faults", {}) or {})
    known = {f.name for f in dataclasses.fields(SimConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown sim config keys: {sorted(unknown)}")
    return SimConfig(models=models, faults=faults, **raw)
