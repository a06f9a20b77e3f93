"""``tokens create|list|revoke USER`` and ``limits show|set USER``."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import asdict

from .. import accounts
from ..accounts import tokens
from ..jobs import limits
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("tokens", help="personal access tokens for the API").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = group.add_parser("create", help="make a token (printed once)")
    create.add_argument("name", help="the user")
    create.add_argument("--label", default="cli", help="what the token is for")
    create.add_argument("--scope", choices=tokens.TOKEN_SCOPES, default="jobs")
    create.add_argument("--days", type=float, default=None, help="expires after this many days (default: never)")
    create.set_defaults(handler=create_token)
    listing = group.add_parser("list", help="a user's tokens")
    listing.add_argument("name")
    listing.set_defaults(handler=list_tokens)
    revoke = group.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("name")
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(handler=revoke_token)

    lim = sub.add_parser("limits", help="per-user limits").add_subparsers(dest="action", required=True, metavar="ACTION")
    show = lim.add_parser("show", help="a user's limits and usage")
    show.add_argument("name")
    show.set_defaults(handler=show_limits)
    put = lim.add_parser("set", help="override a limit (a number, 0 for none, 'default' for the role's)")
    put.add_argument("name")
    put.add_argument("limit", choices=limits.NAMES)
    put.add_argument("value")
    put.set_defaults(handler=set_limit)


def _user_id(ctx: Context, name: str) -> int:
    return accounts.user_named(ctx.db, name).id


def create_token(ctx: Context, args: argparse.Namespace) -> int:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=args.days) if args.days else None
    secret, info = tokens.create(ctx.db, _user_id(ctx, args.name), args.label, scope=args.scope, expires_at=expires)
    ctx.emit({"id": info.id, "token": secret, "scope": info.scope, "expires_at": info.expires_at},
             f"{secret}\n(token {info.id}, scope {info.scope}; shown once — store it now)")
    return 0


def list_tokens(ctx: Context, args: argparse.Namespace) -> int:
    rows = tokens.list_for_user(ctx.db, _user_id(ctx, args.name))
    ctx.emit([asdict(r) for r in rows], "\n".join(
        f"{r.id:>5}  {r.prefix}…  {r.scope:<5}  {r.name}  expires {r.expires_at or 'never'}  last used {r.last_used_at or 'never'}"
        for r in rows) or "no tokens")
    return 0


def revoke_token(ctx: Context, args: argparse.Namespace) -> int:
    tokens.revoke(ctx.db, _user_id(ctx, args.name), args.token_id)
    ctx.emit({"revoked": args.token_id}, f"token {args.token_id} revoked")
    return 0


def show_limits(ctx: Context, args: argparse.Namespace) -> int:
    uid = _user_id(ctx, args.name)
    data = {"limits": limits.effective(ctx.db, ctx.settings, uid), "usage": asdict(limits.usage(ctx.db, uid))}
    ctx.emit(data, "\n".join([f"{k}: {v or 'none'}" for k, v in data["limits"].items()]
                             + [f"  {k} = {v}" for k, v in data["usage"].items()]))
    return 0


def set_limit(ctx: Context, args: argparse.Namespace) -> int:
    value = None if args.value == "default" else int(args.value)
    limits.set_override(ctx.db, _user_id(ctx, args.name), args.limit, value)
    return show_limits(ctx, args)
