"""Checking a graph against a ComfyUI node schema (the JSON of ``GET /object_info``).

The loader checks a spec against its own graph; this checks the graph against what a
ComfyUI build actually offers: classes, input names, literal values within the declared
ranges and combos, and links to outputs that exist with a matching type. Combos listing
files (models, ``input/`` images) depend on the host and are not checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import Param, Target, WorkflowSpec

#: Inputs whose combo lists files on the host, so a literal is not expected to be in it.
_HOST_FILE_COMBOS = {"image", "ckpt_name", "lora_name", "control_net_name", "vae_name", "model_name", "clip_name",
                     "unet_name", "style_model_name", "gligen_name", "hypernetwork_name", "photomaker_model_name"}


def check_graph(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[str]:
    """Problems of an API-format ``graph`` against ``object_info`` (empty when it fits)."""
    problems: list[str] = []
    for node_id, node in graph.items():
        cls = node.get("class_type")
        info = object_info.get(cls)
        if info is None:
            problems.append(f"node {node_id}: unknown class {cls!r}")
            continue
        declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name in info["input"].get("required", {}):
            if name not in node["inputs"]:
                problems.append(f"node {node_id} ({cls}): required input {name!r} is missing")
        for name, value in node["inputs"].items():
            if name not in declared:
                problems.append(f"node {node_id} ({cls}): no input named {name!r}")
                continue
            problem = _check_value(graph, object_info, declared[name], name, value)
            if problem:
                problems.append(f"node {node_id} ({cls}) input {name!r}: {problem}")
    if not any(object_info.get(n.get("class_type"), {}).get("output_node") for n in graph.values()):
        problems.append("the graph has no output node")
    return problems


def check_spec(spec: WorkflowSpec, object_info: Mapping[str, Any]) -> list[str]:
    """Problems of ``spec`` against ``object_info``: its graph, its output nodes, and
    parameter limits that would let a creator send a value the node refuses."""
    problems = check_graph(spec.graph, object_info)
    for output in spec.outputs:
        cls = spec.graph[output.graph_node]["class_type"]
        if not object_info.get(cls, {}).get("output_node"):
            problems.append(f"outputs: node {output.graph_node} ({cls}) is not an output node")
    for param in spec.params:
        for target in param.targets:
            cls = spec.graph[target.graph_node]["class_type"]
            inputs = object_info.get(cls, {}).get("input", {})
            decl = {**inputs.get("required", {}), **inputs.get("optional", {})}.get(target.input)
            if decl is None:
                continue  # already reported by check_graph
            problems.extend(f"params.{param.name}: {p}" for p in _check_param_fits(param, target, decl))
    return problems


def _sent_bounds(param: Param, target: Target) -> tuple[float | None, float | None]:
    """The lowest and highest value the target can receive. A ``value`` formula is taken to
    be monotonic, so its results at the parameter's min and max bound it."""
    if target.value is None or param.min is None or param.max is None:
        return param.min, param.max
    ends = [target.value.evaluate({param.name: float(bound)}) for bound in (param.min, param.max)]
    return min(ends), max(ends)


def _check_param_fits(param: Param, target: Target, decl: list[Any]) -> list[str]:
    input_name = target.input
    kind, options = decl[0], decl[1] if len(decl) > 1 else {}
    combo = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
    if combo is not None:
        if input_name in _HOST_FILE_COMBOS:
            return []
        return [f"option {o!r} is not accepted by input {input_name!r}" for o in param.options if o not in combo]
    problems = []
    low, high = _sent_bounds(param, target)
    sent = "" if target.value is None else f" (sent as {target.value.text})"
    if "min" in options and (low is None or low < options["min"]):
        problems.append(f"min {low}{sent} is below the node's minimum {options['min']} for {input_name!r}")
    if "max" in options and (high is None or high > options["max"]):
        problems.append(f"max {high}{sent} is above the node's maximum {options['max']} for {input_name!r}")
    return problems


def _check_value(graph: Mapping[str, Any], object_info: Mapping[str, Any], decl: list[Any], name: str,
                 value: Any) -> str | None:
    kind, options = decl[0], decl[1] if len(decl) > 1 else {}
    if isinstance(value, dict):
        return None  # a wrapped list literal ({"__value__": [...]}); nothing to compare
    if isinstance(value, list):
        source = graph.get(value[0]) if len(value) == 2 and isinstance(value[0], str) else None
        if source is None:
            return f"is not a link to a node of the graph: {value!r}"
        outputs = object_info.get(source["class_type"], {}).get("output", [])
        if not isinstance(value[1], int) or not 0 <= value[1] < len(outputs):
            return f"links to output {value[1]} of {source['class_type']}, which has {len(outputs)} outputs"
        produced = outputs[value[1]]
        expected = "COMBO" if isinstance(kind, list) else kind
        if produced != expected and "*" not in (produced, expected):
            return f"expects {expected}, linked to a {produced}"
        return None
    combo = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
    if combo is not None:
        if name not in _HOST_FILE_COMBOS and value not in combo:
            return f"{value!r} is not one of {combo[:10]}"
        return None
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and not isinstance(value, int)):
            return f"expects {kind}, got {value!r}"
        if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
            return f"{value} is outside {options.get('min')}..{options.get('max')}"
    elif kind == "STRING" and not isinstance(value, str):
        return f"expects STRING, got {value!r}"
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return f"expects BOOLEAN, got {value!r}"
    return None
