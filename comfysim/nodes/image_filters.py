"""Model-free pixel filters: ImageBlend (nodes_post_processing.py) and Canny (nodes_canny.py,
kornia's detector: Gaussian blur, Sobel, non-maximum suppression, hysteresis)."""

from __future__ import annotations

import numpy as np

from .base import RunContext, gaussian_blur, node
from .image_ops import upscale


def _soft_light_g(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, np.sqrt(x))


_BLEND_MODES = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: np.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
    "soft_light": lambda a, b: np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (_soft_light_g(a) - a)),
    "difference": lambda a, b: a - b,
}


@node("ImageBlend")
def image_blend(
    ctx: RunContext, image1: np.ndarray, image2: np.ndarray, blend_factor: float, blend_mode: str
) -> tuple[np.ndarray]:
    if image1.shape != image2.shape:
        image2 = upscale(image2, "bicubic", image1.shape[2], image1.shape[1], "center")
    blended = _BLEND_MODES[blend_mode](image1, image2)
    out = image1 * (1 - blend_factor) + blended * blend_factor
    return (np.clip(out, 0.0, 1.0).astype(np.float32),)


def _sobel(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kornia's unnormalised Sobel (as its canny uses) with replicate padding, on ``[B, H, W]``."""
    p = np.pad(gray, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = gray.shape[1], gray.shape[2]

    def at(dy: int, dx: int) -> np.ndarray:
        return p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1) - at(-1, -1) - 2 * at(0, -1) - at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1) - at(-1, -1) - 2 * at(-1, 0) - at(-1, 1))
    return gx, gy


def _neighbour(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    p = np.pad(array, ((0, 0), (1, 1), (1, 1)))
    return p[:, 1 + dy : 1 + dy + array.shape[1], 1 + dx : 1 + dx + array.shape[2]]


def canny_edges(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Binary edges ``[B, H, W]`` of an IMAGE batch."""
    gray = image[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    blurred = gaussian_blur(gray[..., None], 2, 1.0)[..., 0]
    gx, gy = _sobel(blurred)
    magnitude = np.sqrt(gx * gx + gy * gy + 1e-6)
    # Non-maximum suppression along the gradient direction, quantised to 4 directions.
    angle = (np.round(np.degrees(np.arctan2(gy, gx)) / 45.0) % 4).astype(int)
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
    keep = np.zeros_like(magnitude, dtype=bool)
    for direction, (dy, dx) in offsets.items():
        is_max = (magnitude >= _neighbour(magnitude, dy, dx)) & (magnitude >= _neighbour(magnitude, -dy, -dx))
        keep |= (angle == direction) & is_max
    magnitude = np.where(keep, magnitude, 0.0)
    strong = magnitude > high
    weak = magnitude > low
    # Hysteresis: weak edges survive when connected to a strong one.
    for _ in range(max(image.shape[1], image.shape[2])):
        grown = strong.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                grown |= _neighbour(strong, dy, dx)
        grown &= weak
        if np.array_equal(grown, strong):
            break
        strong = grown
    return strong.astype(np.float32)


@node("Canny")
def canny(ctx: RunContext, image: np.ndarray, low_threshold: float, high_threshold: float) -> tuple[np.ndarray]:
    edges = canny_edges(image, low_threshold, high_threshold)
    return (np.repeat(edges[..., None], 3, axis=3),)
