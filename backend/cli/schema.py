"""``init``: create or upgrade the database schema."""

from __future__ import annotations

import argparse

from ..db import migrate
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create or upgrade the database schema (safe to repeat)")
    p.set_defaults(handler=init)


def init(ctx: Context, args: argparse.Namespace) -> int:
    before = migrate.current_revision(ctx.db)
    migrate.upgrade(ctx.db)
    after = migrate.current_revision(ctx.db)
    ctx.settings.assets_dir.mkdir(parents=True, exist_ok=True)
    ctx.emit(
        {"database": ctx.db.engine.url.render_as_string(hide_password=True), "from": before, "to": after},
        f"schema at revision {after}" + ("" if before == after else f" (was {before or 'empty'})"),
    )
    return 0
