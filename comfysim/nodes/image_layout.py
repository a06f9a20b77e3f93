"""Model-free layout nodes (comfy_extras/nodes_images.py): stitching, fitting onto a canvas and
measuring, with ComfyUI's size arithmetic so results have the same dimensions."""

from __future__ import annotations

import numpy as np

from .base import RunContext, node, resize

_SPACING_COLORS = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


@node("GetImageSize")
def get_image_size(ctx: RunContext, image: np.ndarray) -> tuple[int, int, int]:
    return image.shape[2], image.shape[1], image.shape[0]


@node("ResizeAndPadImage")
def resize_and_pad_image(
    ctx: RunContext, image: np.ndarray, target_width: int, target_height: int, padding_color: str, interpolation: str
) -> tuple[np.ndarray]:
    batch, height, width, channels = image.shape
    scale = min(target_width / width, target_height / height)
    new_width, new_height = int(width * scale), int(height * scale)
    resized = resize(image, new_width, new_height, interpolation)
    padded = np.full((batch, target_height, target_width, channels), 0.0 if padding_color == "black" else 1.0, np.float32)
    top, left = (target_height - new_height) // 2, (target_width - new_width) // 2
    padded[:, top : top + new_height, left : left + new_width, :] = resized
    return (padded,)


def _match_batch(image: np.ndarray, batch: int) -> np.ndarray:
    """Repeat the last frame so both stitched batches have the same length."""
    if image.shape[0] >= batch:
        return image
    extra = np.repeat(image[-1:], batch - image.shape[0], axis=0)
    return np.concatenate([image, extra])


def _match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[3] >= channels:
        return image
    alpha = np.ones(image.shape[:3] + (channels - image.shape[3],), np.float32)
    return np.concatenate([image, alpha], axis=3)


def _pad_across(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Centre ``image`` in ``size`` along ``axis`` with black, as ImageStitch does without matching."""
    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    widths = [(0, 0)] * 4
    widths[axis] = (missing // 2, missing - missing // 2)
    return np.pad(image, widths)


@node("ImageStitch")
def image_stitch(
    ctx: RunContext,
    image1: np.ndarray,
    direction: str,
    match_image_size: bool,
    spacing_width: int,
    spacing_color: str,
    image2: np.ndarray | None = None,
) -> tuple[np.ndarray]:
    if image2 is None:
        return (image1,)
    batch = max(image1.shape[0], image2.shape[0])
    channels = max(image1.shape[3], image2.shape[3])
    image1 = _match_channels(_match_batch(image1, batch), channels)
    image2 = _match_channels(_match_batch(image2, batch), channels)
    horizontal = direction in ("left", "right")
    axis = 2 if horizontal else 1  # the axis images are joined along
    across = 1 if horizontal else 2
    if match_image_size:
        aspect = image2.shape[2] / image2.shape[1]
        if horizontal:
            image2 = resize(image2, int(image1.shape[1] * aspect), image1.shape[1], "lanczos")
        else:
            image2 = resize(image2, image1.shape[2], int(image1.shape[2] / aspect), "lanczos")
    else:
        size = max(image1.shape[across], image2.shape[across])
        image1, image2 = _pad_across(image1, size, across), _pad_across(image2, size, across)
    parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
    if spacing_width > 0:
        width = spacing_width + spacing_width % 2
        shape = list(parts[0].shape)
        shape[axis] = width
        spacer = np.zeros(shape, np.float32)
        spacer[..., :3] = _SPACING_COLORS[spacing_color]
        if channels == 4:
            spacer[..., 3] = 1.0
        parts.insert(1, spacer)
    return (np.concatenate(parts, axis=axis),)
