"""Node implementations, registered by their real ComfyUI class names on import.

Grouped by kind: ``image_io`` (load/save), ``image_ops`` (model-free transforms), ``masks``,
``models`` (simulated model nodes) and ``audio``.
"""

from . import audio, image_io, image_ops, masks, models  # noqa: F401 - imported to register
from .base import REGISTRY, ComboSource, NodeDef, Result, RunContext

__all__ = ["REGISTRY", "ComboSource", "NodeDef", "Result", "RunContext"]
