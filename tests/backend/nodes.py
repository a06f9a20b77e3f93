"""Registering nodes in a registry exactly as an agent does, for scheduler tests."""

from __future__ import annotations

from backend.ports.registry import Capabilities, NodeState, Registry
from backend.workflows import Library

SD15 = "checkpoints/v1-5-pruned-emaonly.safetensors"


def library_capabilities(library: Library, *, models: bool = True) -> Capabilities:
    """A node that can run every workflow of ``library`` (without model files: only model-free ones)."""
    classes: set[str] = set()
    files: set[str] = set()
    for spec in library:
        classes |= spec.node_classes
        files |= {f"{m.folder}/{m.file}" for m in spec.models}
    return Capabilities(classes=frozenset(classes), models=frozenset(files) if models else frozenset())


def register(
    registry: Registry,
    node_id: str,
    caps: Capabilities,
    *,
    slots: int = 2,
    online: bool = True,
    speed: float = 1.0,
    vram_mb: float = 24_000,
    checkpoint: str | None = None,
    ttl: float = 30.0,
) -> None:
    registry.set_capabilities(node_id, caps)
    registry.heartbeat(
        NodeState(
            node_id=node_id,
            online=online,
            slots=slots,
            speed=speed,
            vram_total_mb=vram_mb,
            vram_free_mb=vram_mb,
            loaded_checkpoint=checkpoint,
            caps_version=str(hash(caps)),
            label=node_id,
        ),
        ttl=ttl,
    )
