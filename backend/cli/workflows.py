"""``workflows list|check|quote|import``: inspect the workflow library, price a job by hand and
turn a ComfyUI "Export (API)" file into a new workflow."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter
from ..workflows import (
    InputFacts,
    Library,
    check_spec,
    load_all,
    quote,
    validate_params,
)
from ..workflows.importer import import_export
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("workflows", help="list, check and quote the workflow library")
    wsub = group.add_subparsers(dest="workflows_command", required=True, metavar="ACTION")

    p = wsub.add_parser("list", help="list the workflows")
    p.set_defaults(handler=list_workflows)

    p = wsub.add_parser("check", help="load and check every spec; exit 1 listing the problems")
    p.add_argument("--object-info", type=Path, metavar="PATH",
                   help="also check the graphs against a ComfyUI /object_info JSON file")
    p.set_defaults(handler=check_workflows)

    p = wsub.add_parser("quote", help="validate parameters and show cost, guard verdict and estimate")
    p.add_argument("name", help="workflow name")
    p.add_argument("values", nargs="*", metavar="KEY=VALUE", help="parameter or preset values")
    p.add_argument("--image", action="append", default=[], metavar="PARAM=PATH",
                   help="an image file for a file parameter (repeatable)")
    p.add_argument("--expert", action="store_true", help="allow expert parameters")
    p.set_defaults(handler=quote_workflow)

    p = wsub.add_parser("import", help="propose a workflow from a ComfyUI 'Export (API)' file, then check it")
    p.add_argument("export", type=Path, help="the API-format JSON file")
    p.add_argument("--name", required=True, help="the new workflow's name (lowercase letters, digits, '-')")
    p.add_argument("--node-url", metavar="URL",
                   help="a ComfyUI (or comfysim) whose /object_info gives types, ranges and options")
    p.add_argument("--out", type=Path, metavar="DIR", help="write under DIR instead of the workflows directory")
    p.add_argument("--force", action="store_true", help="replace an existing workflow of that name")
    p.set_defaults(handler=import_workflow)


def list_workflows(ctx: Context, args: argparse.Namespace) -> int:
    library = Library.load(ctx.settings.workflows_dir)
    rows = [{"name": s.name, "category": s.category, "title_en": s.title.en, "title_zh": s.title.zh,
             "params": [p.name for p in s.params], "models": sorted(f"{m.folder}/{m.file}" for m in s.models)}
            for s in library]
    text = "\n".join(f"{r['name']:<24} {r['category']:<16} {r['title_en']} / {r['title_zh']}" for r in rows)
    ctx.emit(rows, text or "no workflows")
    return 0


def check_workflows(ctx: Context, args: argparse.Namespace) -> int:
    specs, errors = load_all(ctx.settings.workflows_dir)
    problems = [str(e) for e in errors]
    if args.object_info is not None:
        object_info = json.loads(args.object_info.read_text(encoding="utf-8"))
        for spec in specs:
            problems.extend(f"{spec.path}: {p}" for p in check_spec(spec, object_info))
    ctx.emit({"ok": [s.name for s in specs], "problems": problems},
             "\n".join([f"ok  {s.name}" for s in specs] + [f"BAD {p}" for p in problems]))
    return 1 if problems else 0


def import_workflow(ctx: Context, args: argparse.Namespace) -> int:
    result = import_export(args.export, args.name, args.out or ctx.settings.workflows_dir,
                           node_url=args.node_url, force=args.force)
    params = [{"name": p["name"], "type": p["type"], "level": "beginner" if p.get("beginner") else "expert",
               "targets": [f"{t['graph_node']}.{t['input']}" for t in p.get("targets", [])]} for p in result.proposal.params]
    lines = [f"wrote {result.folder}/spec.toml and graph.json", "parameters:"]
    lines += [f"  {p['name']:<16} {p['type']:<7} {p['level']:<9} {', '.join(p['targets'])}" for p in params]
    lines += [f"outputs: {', '.join(o['graph_node'] + ' (' + o['kind'] + ')' for o in result.proposal.outputs)}"]
    lines += [f"BAD {p}" for p in result.problems] or [f"ok  {args.name}: review the spec (see its header), then add example.png"]
    ctx.emit({"folder": str(result.folder), "params": params, "outputs": result.proposal.outputs,
              "problems": result.problems}, "\n".join(lines))
    return 1 if result.problems else 0


def quote_workflow(ctx: Context, args: argparse.Namespace) -> int:
    from ..assets.images import inspect_image_file  # the CLI's only use of Pillow

    spec = Library.load(ctx.settings.workflows_dir).get(args.name)
    raw: dict[str, Any] = dict(_split(item, "KEY=VALUE") for item in args.values)
    facts: dict[str, InputFacts] = {}
    for item in args.image:
        param, path = _split(item, "PARAM=PATH")
        info = inspect_image_file(Path(path), max_bytes=ctx.settings.max_upload_bytes,
                                  max_pixels=ctx.settings.max_image_pixels)
        facts[param] = InputFacts(width=info.width, height=info.height)
        # The studio refers to uploads by content hash; do the same here.
        raw[param] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    values = validate_params(spec, raw, expert=args.expert)
    result = quote(spec, values, facts)
    data = {"workflow": spec.name, "values": values, "cost": result.cost, "memory_mb": round(result.memory_mb, 1),
            "seconds": round(result.seconds, 1), "accepted": result.accepted,
            "message_en": result.rejection.en if result.rejection else None,
            "message_zh": result.rejection.zh if result.rejection else None}
    lines = [f"{key} = {value!r}" for key, value in values.items()]
    lines += [f"cost: {result.cost} credits", f"memory: {result.memory_mb:.0f} MiB",
              f"estimated time: {result.seconds:.1f} s"]
    if result.rejection:
        lines += ["guard: REFUSED", f"  {result.rejection.en}", f"  {result.rejection.zh}"]
    else:
        lines.append("guard: accepted")
    ctx.emit(data, "\n".join(lines))
    return 0 if result.accepted else 1


def _split(item: str, shape: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise InvalidParameter(f"Expected {shape}, got {item!r}", zh=f"应为 {shape} 格式，而不是 {item!r}")
    return key.strip(), value
