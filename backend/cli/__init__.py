"""``python -m backend``: the operator's command line.

Each sub-module registers one group of commands. A handler receives the
:class:`~backend.cli.context.Context` and the parsed arguments and returns the exit code.
Errors go to stderr with a non-zero exit; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import StudioError
from . import assets, codes, credits, events, formula, job, ledger, schema, tokens, users, worker, workflows
from .context import Context

GROUPS = (schema, users, credits, codes, ledger, workflows, formula, assets, worker, job, events, tokens)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="AIGC Studio administration.")
    parser.add_argument("--config", help="TOML settings file (default: $STUDIO_CONFIG)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes positionals in one run, so "job submit alice w --image i=x.png scale=2"
    # leaves the key=value after an option over; they belong to the command's parameters.
    if extra and hasattr(args, "values") and all("=" in item and not item.startswith("-") for item in extra):
        args.values = [*args.values, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        ctx = Context.from_args(args)
        try:
            return int(args.handler(ctx, args) or 0)
        finally:
            ctx.close()
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
