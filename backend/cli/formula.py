"""``formula check``: try a cost/guard/estimate formula before putting it in a spec."""

from __future__ import annotations

import argparse

from ..errors import InvalidParameter
from ..formulas import compile_formula, credits_from
from ..workflows import Library
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("formula", help="check formulas")
    fsub = group.add_subparsers(dest="formula_command", required=True, metavar="ACTION")
    p = fsub.add_parser("check", help="check a formula against the allowlist and evaluate it")
    p.add_argument("expression", help='e.g. "steps * width * height / 262144 / 10"')
    p.add_argument("values", nargs="*", metavar="NAME=VALUE", help="values for the names it uses")
    p.add_argument("--workflow", metavar="NAME", help="also allow the names of this workflow's formulas")
    p.set_defaults(handler=check_formula)


def check_formula(ctx: Context, args: argparse.Namespace) -> int:
    values: dict[str, float] = {}
    for item in args.values:
        name, sep, raw = item.partition("=")
        try:
            values[name.strip()] = float(raw)
        except ValueError:
            raise InvalidParameter(f"Expected NAME=NUMBER, got {item!r}", zh=f"应为 名称=数字，而不是 {item!r}") from None
        if not sep:
            raise InvalidParameter(f"Expected NAME=NUMBER, got {item!r}", zh=f"应为 名称=数字，而不是 {item!r}")
    names = set(values)
    if args.workflow:
        names |= Library.load(ctx.settings.workflows_dir).get(args.workflow).formula_names()
    formula = compile_formula(args.expression, names)
    data: dict[str, object] = {"ok": True, "names": sorted(formula.names), "numexpr": formula.expression}
    lines = ["ok", f"uses: {', '.join(sorted(formula.names)) or 'no names'}", f"numexpr: {formula.expression}"]
    missing = sorted(formula.names - values.keys())
    if missing:
        lines.append(f"give {', '.join(f'{n}=...' for n in missing)} to evaluate it")
    else:
        value = formula.evaluate(values)
        data.update(value=value, credits=credits_from(value))
        lines += [f"value: {value:g}", f"as a cost: {credits_from(value)} credits"]
    ctx.emit(data, "\n".join(lines))
    return 0
