"""Node implementations, registered by their real ComfyUI class names on import.

Grouped by kind: ``image_io`` (load/save), ``image_ops``, ``image_layout`` and
``image_filters`` (model-free transforms), ``masks``, ``strings``, ``models`` (simulated model
nodes), ``video`` (LTX-Video), ``video_io`` (CreateVideo, SaveVideo) and ``audio``.
"""

from . import (  # noqa: F401 - imported to register
    audio,
    image_filters,
    image_io,
    image_layout,
    image_ops,
    masks,
    models,
    strings,
    video,
    video_io,
)
from .base import REGISTRY, ComboSource, NodeDef, Result, RunContext

__all__ = ["REGISTRY", "ComboSource", "NodeDef", "Result", "RunContext"]
