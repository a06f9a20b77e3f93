"""Mask nodes (comfy_extras/nodes_mask.py), including the failure of ImageToMask on RGB."""

from __future__ import annotations

import numpy as np

from .base import RunContext, node

_CHANNELS = ["red", "green", "blue", "alpha"]


@node("ImageToMask")
def image_to_mask(ctx: RunContext, image: np.ndarray, channel: str) -> tuple[np.ndarray]:
    index = _CHANNELS.index(channel)
    if index >= image.shape[3]:
        # The exact message torch gives when indexing the alpha channel of an RGB tensor;
        # agents match on it to tell bad input images from simulator bugs.
        raise IndexError(f"index {index} is out of bounds for dimension 3 with size {image.shape[3]}")
    return (image[:, :, :, index].copy(),)


@node("MaskToImage")
def mask_to_image(ctx: RunContext, mask: np.ndarray) -> tuple[np.ndarray]:
    flat = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
    return (np.repeat(flat[..., None], 3, axis=3).astype(np.float32),)


@node("SolidMask")
def solid_mask(ctx: RunContext, value: float, width: int, height: int) -> tuple[np.ndarray]:
    return (np.full((1, height, width), value, dtype=np.float32),)


@node("InvertMask")
def invert_mask(ctx: RunContext, mask: np.ndarray) -> tuple[np.ndarray]:
    return (1.0 - mask,)
