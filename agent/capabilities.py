"""What a ComfyUI host can run: its node classes and its model files.

The scheduler matches a workflow's needs against this set, so it is re-read after every
reconnect (ComfyUI may have restarted with other custom nodes or models).
"""

from __future__ import annotations

import hashlib

from backend.ports.registry import Capabilities

from .comfy import ComfyClient


def read_capabilities(client: ComfyClient) -> Capabilities:
    """Node classes from ``/object_info`` plus every ``/models/{folder}`` file as ``folder/file``."""
    classes = frozenset(client.object_info())
    models = frozenset(f"{folder}/{name}" for folder in client.model_folders() for name in client.model_files(folder))
    return Capabilities(classes=classes, models=models)


def caps_version(caps: Capabilities) -> str:
    """A short digest of the set: equal sets give equal versions, on every agent."""
    return hashlib.sha256(caps.to_json().encode()).hexdigest()[:16]
