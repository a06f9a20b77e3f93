"""What every simulated node is made of: the registry, the run context, shared helpers.

Images travel between nodes as ComfyUI's IMAGE layout, a float32 numpy array
``[batch, height, width, channels]`` in 0..1; masks are ``[batch, height, width]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..config import SimConfig
from ..files import Folders

NodeFunction = Callable[..., Any]


@dataclass(frozen=True)
class Result:
    """A node's return: its outputs by slot, and the UI dict that lands in history."""

    outputs: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None


@dataclass(frozen=True)
class ComboSource:
    """A combo whose options are recomputed from the node's state on every /object_info."""

    kind: str  # "input_images" or "models"
    folder: str = ""


@dataclass(frozen=True)
class NodeDef:
    class_type: str
    function: NodeFunction
    # Inputs checked by the node's own validator instead of min/max/combo (ComfyUI's
    # VALIDATE_INPUTS); the validator returns True or a reason string.
    validator: Callable[[Folders, dict[str, Any]], bool | str] | None = None
    validated_inputs: tuple[str, ...] = ()
    # IS_CHANGED: a value that, when it changes, invalidates the cached output.
    is_changed: Callable[[Folders, dict[str, Any]], Any] | None = None
    combos: dict[str, ComboSource] = field(default_factory=dict)
    hidden: tuple[str, ...] = ()


REGISTRY: dict[str, NodeDef] = {}


def node(
    class_type: str,
    *,
    validator: Callable[[Folders, dict[str, Any]], bool | str] | None = None,
    validated_inputs: tuple[str, ...] = (),
    is_changed: Callable[[Folders, dict[str, Any]], Any] | None = None,
    combos: dict[str, ComboSource] | None = None,
    hidden: tuple[str, ...] = (),
) -> Callable[[NodeFunction], NodeFunction]:
    """Register a node implementation under its real ComfyUI class name."""

    def register(function: NodeFunction) -> NodeFunction:
        REGISTRY[class_type] = NodeDef(
            class_type, function, validator, validated_inputs, is_changed, combos or {}, hidden
        )
        return function

    return register


class ProgressSink(Protocol):
    def progress(self, value: float, total: float, preview: Image.Image | None, fmt: str) -> None: ...

    def wait_step(self, seconds: float) -> None: ...


@dataclass
class RunContext:
    """What a node may use while it runs; built by the executor for each node."""

    node_id: str
    class_type: str
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    config: SimConfig
    folders: Folders
    sink: ProgressSink
    # Simulated VRAM residents (checkpoint name -> bytes), shared by all prompts of a node and
    # emptied by POST /free; reported in /system_stats.
    models_loaded: dict[str, int]

    def progress(
        self, value: float, total: float, preview: Image.Image | None = None, fmt: str = "JPEG"
    ) -> None:
        """Report a progress-bar step; raises InterruptProcessing when /interrupt landed.

        ``preview`` is sent as a binary frame (``fmt`` JPEG or PNG) when previews are on.
        """
        self.sink.progress(value, total, preview, fmt)

    def wait_step(self) -> None:
        """Spend one simulated sampler step (step_seconds), waking early on interrupt."""
        self.sink.wait_step(self.config.step_seconds)


# ---- image helpers shared by node modules -------------------------------------------------

RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bislerp": Image.Resampling.BILINEAR,
}


def resize(images: np.ndarray, width: int, height: int, method: str) -> np.ndarray:
    """Resize ``[B, H, W, C]`` (or masks ``[B, H, W]``) channel by channel in float precision."""
    squeeze = images.ndim == 3
    batch = images[..., None] if squeeze else images
    out = np.empty((batch.shape[0], height, width, batch.shape[3]), dtype=np.float32)
    resample = RESAMPLE[method]
    for b in range(batch.shape[0]):
        for c in range(batch.shape[3]):
            channel = Image.fromarray(np.ascontiguousarray(batch[b, :, :, c], dtype=np.float32), mode="F")
            out[b, :, :, c] = np.asarray(channel.resize((width, height), resample))
    if method in ("bicubic", "lanczos"):
        np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if squeeze else out


def to_pil(image: np.ndarray) -> Image.Image:
    """One ``[H, W, C]`` float image to an 8-bit Pillow image, as SaveImage converts it."""
    return Image.fromarray(np.clip(255.0 * image, 0, 255).astype(np.uint8))


def from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def gaussian_blur(images: np.ndarray, radius: int, sigma: float) -> np.ndarray:
    """ComfyUI's ImageBlur kernel (linspace(-1, 1) Gaussian, reflect padding), separably."""
    size = radius * 2 + 1
    x = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    kernel = np.exp(-(x * x) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    padded = np.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    height, width = images.shape[1], images.shape[2]
    rows = sum(kernel[i] * padded[:, i : i + height, :, :] for i in range(size))
    return sum(kernel[i] * rows[:, :, i : i + width, :] for i in range(size)).astype(np.float32)
