"""String utility nodes (comfy_extras/nodes_string.py): model-free, computed for real."""

from __future__ import annotations

from .base import RunContext, node


@node("StringConcatenate")
def string_concatenate(ctx: RunContext, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
    # ComfyUI joins even when one side is empty, so "a cat" + "" with ", " gives "a cat, ".
    return (delimiter.join([string_a, string_b]),)
