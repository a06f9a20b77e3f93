"""``codes create|redeem|list``."""

from __future__ import annotations

import argparse

from backend import accounts
from backend.accounts import codes
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("codes", help="redeem codes").add_subparsers(dest="action", required=True, metavar="ACTION")

    create = group.add_parser("create", help="create a batch of single-use codes (printed once)")
    create.add_argument("count", type=int)
    create.add_argument("--credits", type=int, required=True)
    create.add_argument("--expires-days", type=float, default=None)
    create.set_defaults(handler=create_codes)

    redeem = group.add_parser("redeem", help="redeem a code for a user")
    redeem.add_argument("name")
    redeem.add_argument("code")
    redeem.set_defaults(handler=redeem_code)

    group.add_parser("list", help="list batches").set_defaults(handler=list_batches)


def create_codes(ctx: Context, args: argparse.Namespace) -> int:
    batch = codes.create_batch(ctx.db, args.count, args.credits, expires_days=args.expires_days)
    data = {"batch": batch.batch, "credits": batch.credits, "expires_at": batch.expires_at, "codes": batch.codes}
    ctx.emit(data, "\n".join(batch.codes))
    return 0


def redeem_code(ctx: Context, args: argparse.Namespace) -> int:
    user = accounts.user_named(ctx.db, args.name)
    added = codes.redeem(
        ctx.db, user.id, args.code,
        max_failures=ctx.settings.redeem_max_failures, window_seconds=ctx.settings.redeem_window_seconds,
    )
    ctx.emit({"name": user.name, "credits": added}, f"{user.name} redeemed {added} credits")
    return 0


def list_batches(ctx: Context, args: argparse.Namespace) -> int:
    rows = codes.list_batches(ctx.db)
    lines = [f"{r['batch']}  {r['credits']:>6} credits  {r['redeemed']}/{r['codes']} used  expires {r['expires_at'] or 'never'}" for r in rows]
    ctx.emit(rows, "\n".join(lines) or "no batches")
    return 0
