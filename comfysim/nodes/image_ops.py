"""Model-free image nodes, computed for real with numpy and Pillow.

Each follows the arithmetic of its ComfyUI counterpart (nodes.py, comfy_extras/nodes_images.py,
nodes_post_processing.py, nodes_mask.py) so sizes, clamping and edge cases match.
"""

from __future__ import annotations

import math

import numpy as np

from .base import RunContext, gaussian_blur, node, resize


@node("EmptyImage")
def empty_image(ctx: RunContext, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[np.ndarray]:
    rgb = [((color >> shift) & 0xFF) / 255.0 for shift in (16, 8, 0)]
    image = np.empty((batch_size, height, width, 3), dtype=np.float32)
    image[...] = np.array(rgb, dtype=np.float32)
    return (image,)


@node("ImageInvert")
def image_invert(ctx: RunContext, image: np.ndarray) -> tuple[np.ndarray]:
    return (1.0 - image,)


def _center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    old_h, old_w = image.shape[1], image.shape[2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return image[:, y : old_h - y, x : old_w - x]


def upscale(image: np.ndarray, method: str, width: int, height: int, crop: str = "disabled") -> np.ndarray:
    """ComfyUI's common_upscale: 0 for one side keeps the aspect ratio, 0 for both is a no-op."""
    if width == 0 and height == 0:
        return image
    if width == 0:
        width = max(1, round(image.shape[2] * height / image.shape[1]))
    elif height == 0:
        height = max(1, round(image.shape[1] * width / image.shape[2]))
    if crop == "center":
        image = _center_crop(image, width, height)
    return resize(image, width, height, method)


@node("ImageScale")
def image_scale(
    ctx: RunContext, image: np.ndarray, upscale_method: str, width: int, height: int, crop: str
) -> tuple[np.ndarray]:
    return (upscale(image, upscale_method, width, height, crop),)


@node("ImageScaleBy")
def image_scale_by(ctx: RunContext, image: np.ndarray, upscale_method: str, scale_by: float) -> tuple[np.ndarray]:
    width = round(image.shape[2] * scale_by)
    height = round(image.shape[1] * scale_by)
    return (upscale(image, upscale_method, width, height),)


@node("ImageScaleToTotalPixels")
def image_scale_to_total_pixels(
    ctx: RunContext, image: np.ndarray, upscale_method: str, megapixels: float
) -> tuple[np.ndarray]:
    total = int(megapixels * 1024 * 1024)
    scale_by = math.sqrt(total / (image.shape[2] * image.shape[1]))
    width = round(image.shape[2] * scale_by)
    height = round(image.shape[1] * scale_by)
    return (upscale(image, upscale_method, width, height),)


@node("ImageBlur")
def image_blur(ctx: RunContext, image: np.ndarray, blur_radius: int, sigma: float) -> tuple[np.ndarray]:
    if blur_radius == 0:
        return (image,)
    return (gaussian_blur(image, blur_radius, sigma),)


@node("ImageSharpen")
def image_sharpen(
    ctx: RunContext, image: np.ndarray, sharpen_radius: int, sigma: float, alpha: float
) -> tuple[np.ndarray]:
    if sharpen_radius == 0:
        return (image,)
    # ComfyUI's kernel is -(alpha*10)*G with the centre raised so it sums to 1, which equals
    # image + alpha*10 * (image - blur(image)).
    amount = alpha * 10.0
    blurred = gaussian_blur(image, sharpen_radius, sigma)
    return (np.clip(image + amount * (image - blurred), 0.0, 1.0).astype(np.float32),)


@node("ImageCrop")
def image_crop(ctx: RunContext, image: np.ndarray, width: int, height: int, x: int, y: int) -> tuple[np.ndarray]:
    # ComfyUI clamps the origin into the image and slices, so an oversized crop is smaller
    # rather than an error.
    x = min(x, image.shape[2] - 1)
    y = min(y, image.shape[1] - 1)
    return (image[:, y : y + height, x : x + width, :],)


@node("ImageFlip")
def image_flip(ctx: RunContext, image: np.ndarray, flip_method: str) -> tuple[np.ndarray]:
    axis = 1 if flip_method.startswith("x") else 2
    return (np.flip(image, axis=axis).copy(),)


@node("ImageRotate")
def image_rotate(ctx: RunContext, image: np.ndarray, rotation: str) -> tuple[np.ndarray]:
    turns = {"none": 0, "90 degrees": 3, "180 degrees": 2, "270 degrees": 1}[rotation]
    return (np.rot90(image, k=turns, axes=(2, 1)).copy(),)


@node("ImagePadForOutpaint")
def image_pad_for_outpaint(
    ctx: RunContext, image: np.ndarray, left: int, top: int, right: int, bottom: int, feathering: int
) -> tuple[np.ndarray, np.ndarray]:
    batch, height, width, channels = image.shape
    padded = np.full((batch, height + top + bottom, width + left + right, channels), 0.5, np.float32)
    padded[:, top : top + height, left : left + width, :] = image
    mask = np.ones((height + top + bottom, width + left + right), dtype=np.float32)
    inner = np.zeros((height, width), dtype=np.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = np.arange(height)[:, None]
        cols = np.arange(width)[None, :]
        distance = np.minimum.reduce(
            [
                np.broadcast_to(rows if top else height, (height, width)),
                np.broadcast_to(height - rows if bottom else height, (height, width)),
                np.broadcast_to(cols if left else width, (height, width)),
                np.broadcast_to(width - cols if right else width, (height, width)),
            ]
        )
        feather = (feathering - distance) / feathering
        inner = np.where(distance < feathering, feather * feather, 0.0).astype(np.float32)
    mask[top : top + height, left : left + width] = inner
    return padded, mask


def _repeat_to_batch(array: np.ndarray, batch: int) -> np.ndarray:
    if array.shape[0] >= batch:
        return array[:batch]
    reps = math.ceil(batch / array.shape[0])
    return np.concatenate([array] * reps)[:batch]


@node("ImageCompositeMasked")
def image_composite_masked(
    ctx: RunContext,
    destination: np.ndarray,
    source: np.ndarray,
    x: int,
    y: int,
    resize_source: bool,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray]:
    out = destination.copy()
    if resize_source:
        source = resize(source, out.shape[2], out.shape[1], "bilinear")
    source = _repeat_to_batch(source, out.shape[0])
    left, top = min(x, out.shape[2]), min(y, out.shape[1])
    height = min(source.shape[1], out.shape[1] - top)
    width = min(source.shape[2], out.shape[2] - left)
    if mask is None:
        weight = np.ones(source.shape[:3], dtype=np.float32)
    else:
        flat = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
        weight = _repeat_to_batch(resize(flat, source.shape[2], source.shape[1], "bilinear"), source.shape[0])
    weight = weight[:, :height, :width, None]
    region = out[:, top : top + height, left : left + width, :]
    out[:, top : top + height, left : left + width, :] = (
        weight * source[:, :height, :width, :] + (1.0 - weight) * region
    )
    return (out,)
