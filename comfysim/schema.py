"""/object_info: the real ComfyUI 0.3.64 entries for the classes the sim implements.

``object_info.json`` is the schema captured from a real server. Combos that list files (input
images, model folders) are recomputed from the node's state on every call, as ComfyUI does, so
a missing model fails validation with the same ``value_not_in_list`` error.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import SimConfig
from .files import Folders
from .nodes import REGISTRY, ComboSource

# The captured schema omits display names; these are the ones ComfyUI shows.
DISPLAY_NAMES = {
    "LoadImage": "Load Image",
    "LoadImageMask": "Load Image (as Mask)",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "ImageInvert": "Invert Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageScaleToTotalPixels": "Scale Image to Total Pixels",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
    "CheckpointLoaderSimple": "Load Checkpoint",
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "EmptyLatentImage": "Empty Latent Image",
    "KSamplerAdvanced": "KSampler (Advanced)",
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "LoraLoader": "Load LoRA",
    "ControlNetLoader": "Load ControlNet Model",
    "ControlNetApplyAdvanced": "Apply ControlNet",
    "UpscaleModelLoader": "Load Upscale Model",
    "ImageUpscaleWithModel": "Upscale Image (using Model)",
    "EmptyImage": "EmptyImage",
}


@lru_cache(maxsize=1)
def captured_schema() -> dict[str, Any]:
    with open(Path(__file__).with_name("object_info.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _combo_options(source: ComboSource, config: SimConfig, folders: Folders) -> list[str]:
    if source.kind == "input_images":
        return folders.input_images()
    return config.model_files(source.folder)


def class_info(class_type: str, config: SimConfig, folders: Folders) -> dict[str, Any] | None:
    """The /object_info entry of one supported class, or None if the sim does not run it."""
    definition = REGISTRY.get(class_type)
    captured = captured_schema().get(class_type)
    if definition is None or captured is None:
        return None
    info = copy.deepcopy(captured)
    info.setdefault("name", class_type)
    info.setdefault("display_name", DISPLAY_NAMES.get(class_type, class_type))
    info.setdefault("description", "")
    for name, source in definition.combos.items():
        spec = info["input"]["required"][name]
        options = _combo_options(source, config, folders)
        if spec[0] == "COMBO":  # newer node API encoding
            spec[1]["options"] = options
        else:
            spec[0] = options
    return info


def all_info(config: SimConfig, folders: Folders) -> dict[str, Any]:
    out = {}
    for class_type in sorted(REGISTRY):
        info = class_info(class_type, config, folders)
        if info is not None:
            out[class_type] = info
    return out


def input_specs(info: dict[str, Any]) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(name, category, type, options) for each required/optional input, in ComfyUI's order."""
    specs = []
    for category in ("required", "optional"):
        section = info["input"].get(category, {})
        order = info.get("input_order", {}).get(category, list(section))
        for name in order:
            spec = section[name]
            options = spec[1] if len(spec) > 1 else {}
            specs.append((name, category, spec[0], options))
    return specs
