"""``user add|list|disable|enable|passwd``."""

from __future__ import annotations

import argparse
import getpass
import sys

from .. import accounts
from ..errors import InvalidParameter
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="manage accounts").add_subparsers(dest="action", required=True, metavar="ACTION")

    add = user.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="give the admin role")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--credits", type=int, default=0, help="credits granted on creation")
    add.set_defaults(handler=add_user)

    user.add_parser("list", help="list accounts").set_defaults(handler=list_users)

    for action, disabled in (("disable", True), ("enable", False)):
        p = user.add_parser(action, help=f"{action} an account")
        p.add_argument("name")
        p.set_defaults(handler=lambda ctx, args, d=disabled: set_disabled(ctx, args, d))

    passwd = user.add_parser("passwd", help="set a new password (signs the user out everywhere)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(handler=set_password)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidParameter("The two passwords differ.", param="password")
    return first


def add_user(ctx: Context, args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)
    role = "admin" if args.admin else "creator"
    user = accounts.create_user(ctx.db, args.name, password, role=role, welcome_credits=args.credits)
    ctx.emit({"id": user.id, "name": user.name, "role": user.role, "balance": args.credits}, f"created {role} {user.name}")
    return 0


def list_users(ctx: Context, args: argparse.Namespace) -> int:
    rows = [
        {"id": u.id, "name": u.name, "role": u.role, "disabled": u.disabled, "balance": u.balance, "created_at": u.created_at}
        for u in accounts.list_users(ctx.db)
    ]
    lines = [f"{'id':>4}  {'name':<20} {'role':<8} {'balance':>9}  state"]
    lines += [
        f"{r['id']:>4}  {r['name']:<20} {r['role']:<8} {r['balance']:>9}  {'disabled' if r['disabled'] else 'active'}"
        for r in rows
    ]
    ctx.emit(rows, "\n".join(lines))
    return 0


def set_disabled(ctx: Context, args: argparse.Namespace, disabled: bool) -> int:
    user = accounts.set_disabled(ctx.db, args.name, disabled)
    ctx.emit({"name": user.name, "disabled": user.disabled}, f"{user.name} {'disabled' if disabled else 'enabled'}")
    return 0


def set_password(ctx: Context, args: argparse.Namespace) -> int:
    user = accounts.user_named(ctx.db, args.name)
    ended = accounts.set_password(ctx.db, user.id, _read_password(args.password_stdin))
    ctx.emit({"name": user.name, "sessions_ended": ended},
             f"password of {user.name} changed; {ended} session(s) signed out")
    return 0
