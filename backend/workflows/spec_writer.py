"""Rendering a proposed spec (``importer.Proposal``) as a readable ``spec.toml``.

Only what the spec format needs: strings (JSON escapes are valid TOML basic strings), numbers,
booleans and flat lists, in the field order docs/workflows.md describes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .importer import Proposal

_HEADER = """\
# Proposed by `python -m backend workflows import`. Review before offering it to creators:
# - titles, descriptions and labels (the Chinese texts of titles and unknown stages repeat the English),
# - which parameters are beginner fields, their limits and defaults,
# - the formulas and guards, which are rough starting points: calibrate them on your nodes,
# - add example.png (a small result, < 100 KB) for the gallery card.
"""


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _text(key: str, en: str, zh: str) -> list[str]:
    return [f"{key}.en = {_value(en)}", f"{key}.zh = {_value(zh)}"]


def render_spec(proposal: Proposal) -> str:
    title = proposal.name.replace("-", " ").capitalize()
    lines = [_HEADER]
    lines += _text("title", title, title)
    lines += _text("description", f"Imported workflow {proposal.name}.", f"导入的工作流 {proposal.name}。")
    lines.append(f"category = {_value(proposal.category)}")
    for param in proposal.params:
        lines += ["", "[[params]]", f"name = {_value(param['name'])}", f"type = {_value(param['type'])}"]
        lines += _text("label", param["en"], param["zh"])
        if param.get("beginner"):
            lines.append('level = "beginner"')
        if param.get("required") and param["type"] not in ("image", "mask", "audio"):
            lines.append("required = true")
        elif "default" in param:
            lines.append(f"default = {_value(param['default'])}")
        for key in ("min", "max", "step", "options", "mask_of"):
            if param.get(key) is not None:
                lines.append(f"{key} = {_value(param[key])}")
        if param.get("targets"):
            targets = ", ".join(f"{{ graph_node = {_value(t['graph_node'])}, input = {_value(t['input'])} }}" for t in param["targets"])
            lines.append(f"targets = [{targets}]")
    for output in proposal.outputs:
        lines += ["", "[[outputs]]", f"graph_node = {_value(output['graph_node'])}", f"kind = {_value(output['kind'])}"]
    lines += ["", "[stages]"]
    lines += [f"{_value(node)} = {{ en = {_value(t['en'])}, zh = {_value(t['zh'])} }}" for node, t in proposal.stages.items()]
    lines += ["", "[formulas]"] + [f"{key} = {_value(text)}" for key, text in proposal.formulas.items()]
    for guard in proposal.guards:
        lines += ["", "[[guard]]", f"reject_if = {_value(guard['reject_if'])}"]
        lines += _text("message", guard["en"], guard["zh"])
        lines += [f"figures.{name} = {_value(text)}" for name, text in guard.get("figures", {}).items()]
    return "\n".join(lines) + "\n"
