"""Workflow specs: loading a graph template with its spec, checking parameters, building
prompts and quoting prices. See docs/workflows.md for the spec format."""

from .library import Library, load_all
from .loader import load_spec
from .params import validate_params
from .prompt import build_prompt
from .quote import InputFacts, Quote, formula_values, quote
from .schema import check_graph, check_spec
from .spec import Guard, ModelFile, ModelSlot, Output, Param, Preset, PresetOption, Target, Text, WorkflowSpec

__all__ = [
    "Guard", "InputFacts", "Library", "ModelFile", "ModelSlot", "Output", "Param", "Preset", "PresetOption",
    "Quote", "Target", "Text", "WorkflowSpec", "build_prompt", "check_graph", "check_spec", "formula_values", "load_all",
    "load_spec", "quote", "validate_params",
]
