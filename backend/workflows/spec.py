"""What a workflow spec holds, once loaded and checked (see docs/workflows.md).

These are plain frozen dataclasses; :mod:`.loader` builds them from ``spec.toml`` and the
graph, and guarantees the invariants noted here, so the rest of the code never re-checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formulas import Formula

#: Parameter types that hold a number and can therefore appear in formulas.
NUMERIC_TYPES = frozenset({"int", "float", "seed", "bool"})
#: Parameter types filled with an uploaded file rather than a typed-in value.
FILE_TYPES = frozenset({"image", "mask", "audio", "video"})
PARAM_TYPES = NUMERIC_TYPES | FILE_TYPES | {"string", "text", "choice"}
LEVELS = ("beginner", "expert")

#: Measured facts each file type contributes to formulas, as ``<param>_<fact>``.
FACTS_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    "image": ("width", "height", "area"),
    "mask": ("width", "height", "area"),
    "audio": ("seconds",),
    "video": ("seconds",),
}


@dataclass(frozen=True)
class Text:
    """A creator-facing text in English and Chinese."""

    en: str
    zh: str

    def get(self, lang: str) -> str:
        """The text in ``lang`` ("zh…" → Chinese, anything else → English)."""
        return self.zh if lang.lower().startswith("zh") else self.en


@dataclass(frozen=True)
class Target:
    """Where a parameter's value goes: ``graph[graph_node]["inputs"][input]``.

    ``value``, for numeric parameters, is a formula over the parameter's own name whose
    result is sent instead of the value itself (an 8x upscale after a 4x model sends
    ``factor / 4`` to the resize node).
    """

    graph_node: str
    input: str
    value: Formula | None = None


@dataclass(frozen=True, kw_only=True)
class Param:
    """One value a creator can set. ``default`` is already validated (``None``: no default)."""

    name: str
    type: str
    label: Text
    level: str = "expert"
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    max_length: int | None = None
    help: Text | None = None
    targets: tuple[Target, ...] = ()
    #: For a mask: the image parameter it is drawn on. The node merges the two into one
    #: file (ComfyUI's ``/upload/mask``), which the mask's targets receive.
    mask_of: str | None = None

    @property
    def beginner(self) -> bool:
        return self.level == "beginner"


@dataclass(frozen=True, kw_only=True)
class PresetOption:
    """One choice of a preset and the parameter values it sets."""

    name: str
    label: Text
    values: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A named group of settings a beginner picks as one choice (aspect ratio, style)."""

    name: str
    label: Text
    default: str
    options: tuple[PresetOption, ...]

    def option(self, name: str) -> PresetOption | None:
        return next((o for o in self.options if o.name == name), None)


@dataclass(frozen=True, kw_only=True)
class Output:
    """A graph node whose outputs are results shown to the creator."""

    graph_node: str
    kind: str = "image"


@dataclass(frozen=True, kw_only=True)
class Guard:
    """Refuses a job when ``reject_if`` is true, telling the creator why and what to change.

    ``message`` may contain ``{name}`` / ``{name:.1f}`` placeholders for parameter values,
    input facts and the guard's own ``figures`` (extra formulas shown in the message).
    """

    reject_if: Formula
    message: Text
    figures: Mapping[str, Formula] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFile:
    """A model file a node must have, as ComfyUI's ``/models/{folder}`` lists it."""

    folder: str
    file: str


@dataclass(frozen=True, kw_only=True)
class ModelSlot:
    """A loader input whose model file comes from a choice parameter."""

    folder: str
    param: str


@dataclass(frozen=True, kw_only=True)
class WorkflowSpec:
    """A loaded, checked workflow: its graph template and everything around it."""

    name: str
    path: Path
    title: Text
    description: Text
    category: str
    graph: Mapping[str, Any]
    params: tuple[Param, ...]
    presets: tuple[Preset, ...]
    outputs: tuple[Output, ...]
    stages: Mapping[str, Text]
    cost: Formula
    memory_mb: Formula
    seconds: Formula
    guards: tuple[Guard, ...]
    #: Every ``class_type`` in the graph: a node must offer all of them.
    node_classes: frozenset[str]
    #: Model files the graph always needs (literal loader inputs and the spec's ``models``).
    models: frozenset[ModelFile]
    #: Loader inputs set by a choice parameter; the needed file follows the chosen value.
    model_slots: tuple[ModelSlot, ...] = ()
    example: Path | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def preset(self, name: str) -> Preset | None:
        return next((p for p in self.presets if p.name == name), None)

    @property
    def file_params(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.type in FILE_TYPES)

    def formula_names(self) -> frozenset[str]:
        """Names a formula of this spec may use: numeric parameters and input facts."""
        return formula_names(self.params)

    def required_models(self, values: Mapping[str, Any]) -> frozenset[ModelFile]:
        """Model files a node needs to run this workflow with validated ``values``."""
        chosen = {ModelFile(slot.folder, str(values[slot.param])) for slot in self.model_slots if values.get(slot.param)}
        return self.models | chosen

    def stage(self, node: str) -> Text | None:
        """The creator-facing alias of ``node``'s stage, if the spec names one."""
        return self.stages.get(node)


def formula_names(params: tuple[Param, ...] | list[Param]) -> frozenset[str]:
    names: set[str] = set()
    for param in params:
        if param.type in NUMERIC_TYPES:
            names.add(param.name)
        for fact in FACTS_BY_TYPE.get(param.type, ()):
            names.add(f"{param.name}_{fact}")
    return frozenset(names)
