"""The simulator's error tree.

Everything comfysim raises on purpose derives from ``SimError``. Node code that mimics a real
ComfyUI failure raises the same builtin exception the real node raises (``IndexError`` for
ImageToMask on a 3-channel image, ``Exception`` for SaveImage outside the output folder), because
clients see the exception's type name in ``execution_error``.
"""

from __future__ import annotations


class SimError(Exception):
    """Root of every error raised by comfysim itself."""


class ConfigError(SimError):
    """A configuration file or value cannot be used."""


class InterruptProcessing(SimError):
    """Raised inside the worker when ``/interrupt`` lands; becomes ``execution_interrupted``."""


class SimulatedOutOfMemory(SimError):
    """A job needs more simulated VRAM than the node has.

    ``reported_type`` is what ComfyUI puts in ``exception_type`` for a CUDA OOM, so clients that
    match on it behave as with a real GPU.
    """

    reported_type = "torch.OutOfMemoryError"


class InjectedFault(SimError):
    """Raised by the ``raise_in_node`` fault."""
