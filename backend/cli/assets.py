"""``assets add|list``: store a file for a user, list a user's uploads."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import accounts, assets
from ..blobs import BlobStore, read_chunks
from ..errors import InvalidUpload
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("assets", help="stored uploads").add_subparsers(dest="action", required=True, metavar="ACTION")

    add = group.add_parser("add", help="store an image for a user, as if uploaded")
    add.add_argument("path", type=Path, help="a PNG, JPEG or WEBP file")
    add.add_argument("--user", required=True, help="the owner's user name")
    add.set_defaults(handler=add_asset)

    listing = group.add_parser("list", help="a user's uploads, newest first")
    listing.add_argument("--user", required=True, help="the owner's user name")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=list_assets)


def add_asset(ctx: Context, args: argparse.Namespace) -> int:
    user_id = _user_id(ctx, args.user)
    try:
        fh = args.path.open("rb")
    except OSError as exc:
        raise InvalidUpload(f"Cannot read {args.path}: {exc.strerror}.", zh=f"无法读取 {args.path}：{exc.strerror}。") from None
    with fh:
        record = assets.store_upload(
            ctx.db,
            BlobStore(ctx.settings.assets_dir),
            user_id,
            read_chunks(fh),
            name=args.path.name,
            max_bytes=ctx.settings.max_upload_bytes,
            max_pixels=ctx.settings.max_image_pixels,
        )
    ctx.emit(_row(record), f"{record.id}  {record.format}  {record.size} bytes  {record.width}x{record.height}")
    return 0


def list_assets(ctx: Context, args: argparse.Namespace) -> int:
    records = assets.list_uploads(ctx.db, _user_id(ctx, args.user), limit=args.limit)
    lines = [f"{r.id}  {r.format:<4}  {r.size:>10}  {r.width}x{r.height}  {r.name}" for r in records]
    ctx.emit([_row(r) for r in records], "\n".join(lines) or "no uploads")
    return 0


def _user_id(ctx: Context, name: str) -> int:
    return accounts.user_named(ctx.db, name).id


def _row(record: assets.AssetRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "format": record.format,
        "size": record.size,
        "width": record.width,
        "height": record.height,
        "name": record.name,
        "created_at": record.created_at,
    }
