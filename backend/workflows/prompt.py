"""Building the ComfyUI API prompt for one job from a spec's graph template."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameter
from .spec import FILE_TYPES, Target, WorkflowSpec

#: Output nodes with this input get the job's file-name prefix.
PREFIX_INPUT = "filename_prefix"


def build_prompt(spec: WorkflowSpec, values: Mapping[str, Any], *, uploads: Mapping[str, str] | None = None,
                 filename_prefix: str | None = None) -> dict[str, Any]:
    """The API-format prompt for validated ``values`` (see :func:`~.params.validate_params`).

    ``uploads`` maps each file parameter to the file name the node returned from
    ``/upload/image`` (which may differ from what was asked for). ``filename_prefix``, if
    given, replaces the ``filename_prefix`` of the output nodes so a job's results are
    easy to find. The template itself is never changed.

    A mask drawn on an image (``mask_of``) is uploaded as one merged file: its upload name
    is what the graph's LoadImage reads; the image's own name is only the merge's original.
    """
    uploads = uploads or {}
    prompt = copy.deepcopy(dict(spec.graph))
    for param in spec.params:
        if param.type in FILE_TYPES:
            if param.name not in uploads:
                raise InvalidParameter(f"The file for {param.label.en} ({param.name}) has not been uploaded to the node",
                                       zh=f"{param.label.zh}（{param.name}）的文件尚未上传到节点", param=param.name)
            value: Any = uploads[param.name]
        else:
            value = values[param.name]
        for target in param.targets:
            inputs = prompt[target.graph_node]["inputs"]
            inputs[target.input] = value if target.value is None else _computed(target, param.name, value, inputs)
    if filename_prefix is not None:
        for output in spec.outputs:
            inputs = prompt[output.graph_node]["inputs"]
            if PREFIX_INPUT in inputs:
                inputs[PREFIX_INPUT] = filename_prefix
    return prompt


def _computed(target: Target, name: str, value: Any, inputs: dict[str, Any]) -> int | float:
    """A target's ``value`` formula applied to the parameter; a whole number when the
    template's literal is one, since an INT input refuses 2.0."""
    assert target.value is not None
    result = target.value.evaluate({name: float(value)})
    literal = inputs.get(target.input)
    if isinstance(literal, int) and not isinstance(literal, bool):
        return round(result)
    return float(result)
