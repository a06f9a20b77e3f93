"""``ledger verify``: exit 1 when any money invariant is broken."""

from __future__ import annotations

import argparse

from backend.accounts import ledger
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("ledger", help="check the books").add_subparsers(dest="action", required=True, metavar="ACTION")
    group.add_parser("verify", help="check every balance and job against the ledger").set_defaults(handler=verify)


def verify(ctx: Context, args: argparse.Namespace) -> int:
    problems = ledger.verify(ctx.db)
    ctx.emit(
        {"ok": not problems, "problems": [str(p) for p in problems]},
        "ledger OK" if not problems else "\n".join(["ledger BROKEN:"] + [f"  {p}" for p in problems]),
    )
    return 1 if problems else 0
