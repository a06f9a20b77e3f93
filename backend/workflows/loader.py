"""Reading a workflow folder (``spec.toml`` + ``graph.json``) into a checked :class:`WorkflowSpec`.

Everything a spec claims about its graph is checked here — node ids, input names, output
nodes, formula names — so a typo fails when the studio starts (or in ``workflows check``),
not when a creator presses Create. Each failure is a :class:`SpecError` naming the file
and the field.
"""

from __future__ import annotations

import json
import math
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import FormulaRejected, InvalidParameter, SpecError
from ..formulas import FUNCTIONS, Formula, compile_formula
from .params import HARD_MAX_LENGTH, coerce
from .spec import (FACTS_BY_TYPE, FILE_TYPES, LEVELS, NUMERIC_TYPES, PARAM_TYPES, Guard, ModelFile, ModelSlot, Output,
                   Param, Preset, PresetOption, Target, Text, WorkflowSpec, formula_names)

SPEC_FILE = "spec.toml"
GRAPH_FILE = "graph.json"
EXAMPLE_FILE = "example.png"

#: Loader inputs that name a model file, and the ComfyUI model folder the file lives in.
#: Keyed by class as well as input, because e.g. ``model_name`` is a file only for
#: UpscaleModelLoader (API nodes use it for a remote model's name).
MODEL_INPUTS: Mapping[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("VAELoader", "vae_name"): "vae",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("GLIGENLoader", "gligen_name"): "gligen",
    ("HypernetworkLoader", "hypernetwork_name"): "hypernetworks",
    ("PhotoMakerLoader", "photomaker_model_name"): "photomaker",
}
#: Loader values that are built into ComfyUI rather than files (VAELoader's pass-through).
BUILTIN_MODEL_VALUES = frozenset({"pixel_space"})

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: Specs written before the vocabulary settled said ``node`` for a node of the graph.
_RENAMED_NODE_KEY = "the key 'node' is now 'graph_node' (a node of the graph; 'node' means a ComfyUI host): rename it"
WORKFLOW_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
#: Placeholder format specs allowed in guard messages: width, precision, f/g/% only.
_FORMAT_SPEC = re.compile(r"^[<>^]?\d{0,3}(\.\d{1,2})?[fg%]?$")
_TOP_KEYS = {"title", "description", "category", "params", "presets", "outputs", "stages", "formulas", "guard", "models"}
_PARAM_KEYS = {"name", "type", "label", "help", "level", "required", "default", "min", "max", "step", "options",
               "max_length", "targets", "mask_of"}


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value) and abs(value) <= 1e300
    except OverflowError:  # an int too large for a float
        return False


def load_spec(folder: Path) -> WorkflowSpec:
    """Load and check the workflow in ``folder`` (its name is the folder's name)."""
    return _SpecReader(Path(folder)).read()


class _SpecReader:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = folder.name
        self.spec_path = folder / SPEC_FILE
        self.graph_path = folder / GRAPH_FILE
        self.graph: dict[str, Any] = {}

    def fail(self, field: str, message: str, *, path: Path | None = None) -> SpecError:
        where = f"{path or self.spec_path}: {field}" if field else f"{path or self.spec_path}"
        return SpecError(f"{where}: {message}", zh=f"工作流配置有误 {where}: {message}")

    # -- files ---------------------------------------------------------------------------

    def read(self) -> WorkflowSpec:
        if not WORKFLOW_NAME.match(self.name):
            raise self.fail("", f"the folder name {self.name!r} must be lowercase letters, digits and '-'",
                            path=self.folder)
        try:
            with open(self.spec_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise self.fail("", "missing file") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise self.fail("", f"cannot read TOML: {exc}") from None
        self.graph = self.read_graph()

        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
        params = self.params(data.get("params"))
        names = formula_names(params)
        presets = self.presets(data.get("presets", []), params)
        formulas = self.table(data, "formulas")
        example = self.folder / EXAMPLE_FILE
        models, slots = self.models(data.get("models", []), params)
        return WorkflowSpec(
            name=self.name,
            path=self.folder,
            title=self.text(data, "title"),
            description=self.text(data, "description"),
            category=self.category(data.get("category")),
            graph=self.graph,
            params=params,
            presets=presets,
            outputs=self.outputs(data.get("outputs")),
            stages=self.stages(data.get("stages", {})),
            cost=self.formula(formulas, "cost", names, "formulas"),
            memory_mb=self.formula(formulas, "memory_mb", names, "formulas"),
            seconds=self.formula(formulas, "seconds", names, "formulas"),
            guards=self.guards(data.get("guard", []), names),
            node_classes=frozenset(node["class_type"] for node in self.graph.values()),
            models=models,
            model_slots=slots,
            example=example if example.is_file() else None,
        )

    def read_graph(self) -> dict[str, Any]:
        path = self.graph_path
        try:
            graph = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self.fail("", "missing file", path=path) from None
        except (OSError, ValueError) as exc:
            raise self.fail("", f"cannot read JSON: {exc}", path=path) from None
        if not isinstance(graph, dict) or not graph or {"nodes", "links"} <= graph.keys():
            raise self.fail("", "an API-format graph is a non-empty object of node id -> node "
                            "(a UI-format export has 'nodes' and 'links'; use 'Export (API)')", path=path)
        for node_id, node in graph.items():
            if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                    or not isinstance(node.get("inputs"), dict):
                raise self.fail(node_id, "a node needs 'class_type' (text) and 'inputs' (object)", path=path)
            for input_name, value in node["inputs"].items():
                if _is_link(value) and value[0] not in graph:
                    raise self.fail(f"{node_id}.inputs.{input_name}", f"links to node {value[0]!r}, "
                                    "which is not in the graph", path=path)
        return graph

    # -- pieces --------------------------------------------------------------------------

    def table(self, data: Mapping[str, Any], field: str) -> Mapping[str, Any]:
        value = data.get(field)
        if not isinstance(value, dict):
            raise self.fail(field, "missing table" if value is None else "must be a table")
        return value

    def text(self, data: Mapping[str, Any], field: str, prefix: str = "") -> Text:
        where = f"{prefix}{field}"
        value = data.get(field)
        if not isinstance(value, dict):
            raise self.fail(where, "needs 'en' and 'zh' texts (e.g. " + field + ".en = \"...\")")
        for lang in ("en", "zh"):
            if not isinstance(value.get(lang), str) or not value[lang].strip():
                raise self.fail(f"{where}.{lang}", "missing or empty text")
        if set(value) - {"en", "zh"}:
            raise self.fail(where, "only 'en' and 'zh' are allowed")
        return Text(en=value["en"], zh=value["zh"])

    def category(self, value: Any) -> str:
        if not isinstance(value, str) or not WORKFLOW_NAME.match(value):
            raise self.fail("category", "needs a lowercase slug such as 'text-to-image' or 'tool'")
        return value

    def params(self, items: Any) -> tuple[Param, ...]:
        if not isinstance(items, list) or not items:
            raise self.fail("params", "needs at least one [[params]] entry")
        params: list[Param] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            param = self.param(item, f"params[{index}]")
            if param.name in seen:
                raise self.fail(f"params[{index}].name", f"duplicate parameter {param.name!r}")
            seen.add(param.name)
            params.append(param)
        self.check_masks(params)
        facts = {f"{p.name}_{fact}" for p in params for fact in FACTS_BY_TYPE.get(p.type, ())}
        clash = sorted(facts & {p.name for p in params})
        if clash:
            raise self.fail("params", f"parameter {clash[0]!r} clashes with an input fact of the same name")
        return tuple(params)

    def check_masks(self, params: list[Param]) -> None:
        """A mask's ``mask_of`` names an image parameter; an image with no targets of its own
        must be the original of such a mask (it reaches the graph merged with the mask)."""
        images = {p.name for p in params if p.type == "image"}
        originals = {p.mask_of for p in params if p.mask_of}
        for param in params:
            if param.mask_of is not None and param.mask_of not in images:
                raise self.fail(f"params.{param.name}.mask_of", f"{param.mask_of!r} is not an image parameter "
                                f"(image parameters: {', '.join(sorted(images)) or 'none'})")
        for param in params:
            if not param.targets and param.name not in originals:
                raise self.fail(f"params.{param.name}.targets", "needs at least one { graph_node = \"id\", input = \"name\" } "
                                "(only an image that a mask names in mask_of may have none)")

    def param(self, item: Any, where: str) -> Param:
        if not isinstance(item, dict):
            raise self.fail(where, "must be a table")
        unknown = sorted(set(item) - _PARAM_KEYS)
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_PARAM_KEYS))})")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name) or name in FUNCTIONS:
            raise self.fail(f"{where}.name", f"{name!r} must be lowercase letters, digits and '_' "
                            f"(and not a formula function: {', '.join(sorted(FUNCTIONS))})")
        where = f"params.{name}"
        ptype = item.get("type")
        if ptype not in PARAM_TYPES:
            raise self.fail(f"{where}.type", f"{ptype!r} is not one of {', '.join(sorted(PARAM_TYPES))}")
        level = item.get("level", "expert")
        if level not in LEVELS:
            raise self.fail(f"{where}.level", "must be 'beginner' or 'expert'")
        required = item.get("required", ptype in FILE_TYPES)
        if not isinstance(required, bool):
            raise self.fail(f"{where}.required", "must be true or false")
        bounds = {key: self.number(item, key, where) for key in ("min", "max", "step")}
        if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
            raise self.fail(f"{where}.min", "is larger than max")
        options = item.get("options", [])
        if ptype == "choice":
            if not isinstance(options, list) or not options or not all(isinstance(o, str) and o for o in options):
                raise self.fail(f"{where}.options", "a choice needs a list of option strings")
        elif options:
            raise self.fail(f"{where}.options", "only a 'choice' parameter has options")
        mask_of = item.get("mask_of")
        if mask_of is not None and (ptype != "mask" or not isinstance(mask_of, str)):
            raise self.fail(f"{where}.mask_of", "only a 'mask' parameter has mask_of (the name of its image parameter)")
        max_length = item.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or not 0 < max_length <= HARD_MAX_LENGTH):
            raise self.fail(f"{where}.max_length", f"must be a whole number from 1 to {HARD_MAX_LENGTH}")
        param = Param(
            name=name, type=ptype, label=self.text(item, "label", f"{where}."),
            help=self.text(item, "help", f"{where}.") if "help" in item else None,
            level=level, required=required, options=tuple(options), max_length=max_length, mask_of=mask_of,
            targets=self.targets(item.get("targets"), f"{where}.targets", name, ptype), **bounds)
        return self.with_default(param, item, where)

    def with_default(self, param: Param, item: Mapping[str, Any], where: str) -> Param:
        if param.type in FILE_TYPES:
            # A spec cannot drop a LoadImage node from its graph, so an input file is
            # always required and has no default.
            if not param.required or "default" in item:
                raise self.fail(f"{where}.required", "a file input is always required and has no default")
            return param
        if "default" not in item:
            if param.type in ("string", "text"):
                return replace(param, default="")
            if not param.required:
                raise self.fail(f"{where}.default", "an optional parameter needs a default "
                                "(formulas and the graph need a value)")
            return param
        try:
            return replace(param, default=coerce(param, item["default"]))
        except InvalidParameter as exc:
            raise self.fail(f"{where}.default", str(exc)) from None

    def number(self, item: Mapping[str, Any], key: str, where: str) -> float | None:
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise self.fail(f"{where}.{key}", "must be a number")
        if value is not None and not _finite(value):
            raise self.fail(f"{where}.{key}", "must be a finite number within ±1e300")
        if key == "step" and value is not None and value <= 0:
            raise self.fail(f"{where}.{key}", "must be positive")
        return value

    def targets(self, items: Any, where: str, name: str, ptype: str) -> tuple[Target, ...]:
        # An image may have none when a mask is drawn on it (checked once all params are read).
        if items is None and ptype == "image":
            return ()
        if not isinstance(items, list) or not items:
            raise self.fail(where, "needs at least one { graph_node = \"id\", input = \"name\" }")
        targets = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and "node" in item:
                raise self.fail(f"{where}[{index}].node", _RENAMED_NODE_KEY)
            if not isinstance(item, dict) or not {"graph_node", "input"} <= set(item) <= {"graph_node", "input", "value"}:
                raise self.fail(f"{where}[{index}]", "must be { graph_node = \"id\", input = \"name\" } "
                                "with an optional value = \"formula\"")
            node_id, input_name = str(item["graph_node"]), item["input"]
            node = self.graph.get(node_id)
            if node is None:
                raise self.fail(f"{where}[{index}].graph_node", f"node {node_id!r} is not in {GRAPH_FILE}")
            if input_name not in node["inputs"]:
                raise self.fail(f"{where}[{index}].input", f"node {node_id!r} ({node['class_type']}) has no "
                                f"input {input_name!r} (it has {', '.join(sorted(node['inputs']))})")
            if _is_link(node["inputs"][input_name]):
                raise self.fail(f"{where}[{index}].input", f"node {node_id!r} input {input_name!r} is a link "
                                "to another node; a parameter can only replace a literal value")
            value = None
            if "value" in item:
                if ptype not in NUMERIC_TYPES:
                    raise self.fail(f"{where}[{index}].value", "only a numeric parameter's target can compute its value")
                value = self.formula(item, "value", frozenset({name}), f"{where}[{index}]")
            targets.append(Target(graph_node=node_id, input=input_name, value=value))
        return tuple(targets)

    def presets(self, items: Any, params: tuple[Param, ...]) -> tuple[Preset, ...]:
        if not isinstance(items, list):
            raise self.fail("presets", "must be a list of [[presets]] tables")
        by_name = {p.name: p for p in params}
        presets: list[Preset] = []
        for index, item in enumerate(items):
            where = f"presets[{index}]"
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not _NAME.match(name) or name in by_name \
                    or any(p.name == name for p in presets):
                raise self.fail(f"{where}.name", f"{name!r} must be a unique lowercase name, "
                                "different from every parameter")
            where = f"presets.{name}"
            options = []
            for opt_index, raw in enumerate(item.get("options") or []):
                opt_where = f"{where}.options[{opt_index}]"
                if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) \
                        or not isinstance(raw.get("values"), dict) or not raw["values"]:
                    raise self.fail(opt_where, "needs a name, a label and a values table")
                values = {}
                for key, value in raw["values"].items():
                    param = by_name.get(key)
                    if param is None or param.type in FILE_TYPES:
                        raise self.fail(f"{opt_where}.values.{key}", "is not a parameter a preset can set")
                    try:
                        values[key] = coerce(param, value)
                    except InvalidParameter as exc:
                        raise self.fail(f"{opt_where}.values.{key}", str(exc)) from None
                options.append(PresetOption(name=raw["name"], label=self.text(raw, "label", f"{opt_where}."),
                                            values=values))
            if not options:
                raise self.fail(f"{where}.options", "needs at least one option")
            default = item.get("default", options[0].name)
            if default not in [o.name for o in options]:
                raise self.fail(f"{where}.default", f"{default!r} is not one of its options")
            presets.append(Preset(name=name, label=self.text(item, "label", f"{where}."), default=default,
                                  options=tuple(options)))
        return tuple(presets)

    def outputs(self, items: Any) -> tuple[Output, ...]:
        if not isinstance(items, list) or not items:
            raise self.fail("outputs", "needs at least one [[outputs]] entry with the node whose results are shown")
        outputs = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and "node" in item:
                raise self.fail(f"outputs[{index}].node", _RENAMED_NODE_KEY)
            node = str(item.get("graph_node")) if isinstance(item, dict) else None
            if node not in self.graph:
                raise self.fail(f"outputs[{index}].graph_node", f"node {node!r} is not in {GRAPH_FILE}")
            kind = item.get("kind", "image")
            if kind not in ("image", "video", "audio"):
                raise self.fail(f"outputs[{index}].kind", "must be image, video or audio")
            outputs.append(Output(graph_node=node, kind=kind))
        return tuple(outputs)

    def stages(self, items: Any) -> dict[str, Text]:
        if not isinstance(items, dict):
            raise self.fail("stages", "must be a table of node id = { en = ..., zh = ... }")
        stages = {}
        for node_id in items:
            if node_id not in self.graph:
                raise self.fail(f"stages.{node_id}", f"node {node_id!r} is not in {GRAPH_FILE}")
            stages[node_id] = self.text(items, node_id, "stages.")
        return stages

    def formula(self, table: Mapping[str, Any], key: str, names: frozenset[str], prefix: str) -> Formula:
        field = f"{prefix}.{key}"
        text = table.get(key)
        if not isinstance(text, str):
            raise self.fail(field, "missing formula" if text is None else "a formula is a string")
        try:
            return compile_formula(text, names, field=f"{self.spec_path}: {field}")
        except FormulaRejected as exc:
            raise SpecError(str(exc), zh=exc.zh) from None

    def guards(self, items: Any, names: frozenset[str]) -> tuple[Guard, ...]:
        if not isinstance(items, list):
            raise self.fail("guard", "must be a list of [[guard]] tables")
        guards = []
        for index, item in enumerate(items):
            where = f"guard[{index}]"
            if not isinstance(item, dict) or set(item) - {"reject_if", "message", "figures"}:
                raise self.fail(where, "a guard has reject_if, message.en/zh and optional figures")
            figures_table = item.get("figures", {})
            if not isinstance(figures_table, dict):
                raise self.fail(f"{where}.figures", "must be a table of name = formula")
            figures = {}
            for figure in figures_table:
                if not _NAME.match(figure) or figure in names:
                    raise self.fail(f"{where}.figures.{figure}", "needs a new lowercase name")
                figures[figure] = self.formula(figures_table, figure, names, f"{where}.figures")
            message = self.text(item, "message", f"{where}.")
            for lang in ("en", "zh"):
                self.check_placeholders(getattr(message, lang), names | set(figures), f"{where}.message.{lang}")
            guards.append(Guard(reject_if=self.formula(item, "reject_if", names, where), message=message,
                                figures=figures))
        return tuple(guards)

    def check_placeholders(self, text: str, known: set[str] | frozenset[str], where: str) -> None:
        # Messages are formatted with str.format, which can reach attributes ('{x.__class__}');
        # only bare known names with a plain numeric format are allowed.
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise self.fail(where, f"bad placeholder: {exc}") from None
        for _literal, name, spec, conversion in fields:
            if name is None:
                continue
            if name not in known or conversion or not _FORMAT_SPEC.match(spec or ""):
                raise self.fail(where, f"placeholder {{{name}}} must be a known name ({', '.join(sorted(known))}) "
                                "with at most a numeric format such as {x:.1f}")

    def models(self, items: Any, params: tuple[Param, ...]) -> tuple[frozenset[ModelFile], tuple[ModelSlot, ...]]:
        if not isinstance(items, list):
            raise self.fail("models", "must be a list of { folder = ..., file = ... }")
        files = set()
        for index, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"folder", "file"} \
                    or not all(isinstance(v, str) and v for v in item.values()):
                raise self.fail(f"models[{index}]", "must be { folder = \"loras\", file = \"name.safetensors\" }")
            files.add(ModelFile(item["folder"], item["file"]))
        targeted = {(t.graph_node, t.input): p for p in params for t in p.targets}
        slots = []
        for node_id, node in self.graph.items():
            for input_name, value in node["inputs"].items():
                folder = MODEL_INPUTS.get((node["class_type"], input_name))
                if folder is None:
                    continue
                param = targeted.get((node_id, input_name))
                if param is not None:
                    slots.append(ModelSlot(folder=folder, param=param.name))
                elif isinstance(value, str) and value not in BUILTIN_MODEL_VALUES:
                    files.add(ModelFile(folder, value))
        return frozenset(files), tuple(slots)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)
