"""``credits grant|adjust|show``."""

from __future__ import annotations

import argparse

from backend import accounts
from backend.accounts import ledger
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    credits = sub.add_parser("credits", help="grant and inspect credits").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    for action, kind, help_text in (
        ("grant", "grant", "give credits (positive)"),
        ("recharge", "recharge", "record a paid recharge (positive)"),
        ("adjust", "adjust", "correct a balance (may be negative)"),
    ):
        p = credits.add_parser(action, help=help_text)
        p.add_argument("name")
        p.add_argument("amount", type=int)
        p.add_argument("--note", default=None)
        p.set_defaults(handler=lambda ctx, args, k=kind: move(ctx, args, k))

    show = credits.add_parser("show", help="balance and recent ledger rows")
    show.add_argument("name")
    show.add_argument("--limit", type=int, default=20)
    show.set_defaults(handler=show_credits)


def move(ctx: Context, args: argparse.Namespace, kind: str) -> int:
    user = accounts.grant(ctx.db, args.name, args.amount, kind=kind, note=args.note, actor="cli")
    ctx.emit(
        {"name": user.name, "kind": kind, "amount": args.amount, "balance": user.balance},
        f"{kind} {args.amount:+d} → {user.name} now has {user.balance} credits",
    )
    return 0


def show_credits(ctx: Context, args: argparse.Namespace) -> int:
    user = accounts.user_named(ctx.db, args.name)
    rows = ledger.ledger_page(ctx.db, user.id, limit=args.limit).lines
    data = {
        "name": user.name,
        "balance": user.balance,
        "ledger": [
            {"id": e.id, "at": e.created_at, "kind": e.kind, "amount": e.amount, "balance_after": e.balance_after,
             "job_id": e.job_id, "note": e.note}
            for e in rows
        ],
    }
    lines = [f"{user.name}: {user.balance} credits"]
    lines += [
        f"  {e.created_at:%Y-%m-%d %H:%M}  {e.kind:<8} {e.amount:>+7d}  = {e.balance_after:<7} {e.job_id or e.note or ''}"
        for e in rows
    ]
    ctx.emit(data, "\n".join(lines))
    return 0
