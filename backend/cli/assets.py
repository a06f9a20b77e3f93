"""``assets add|list|migrate|verify|gc|usage``: store a file for a user, list a user's
uploads; copy the store into another, check it against the database, remove unreferenced
blobs, show the bytes stored per user."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from pathlib import Path

from .. import accounts, assets
from ..assets.blobs import read_chunks
from ..assets import maintenance
from ..assets.blobs import LocalBlobStore, human_size
from ..assets.stores import open_blob_store
from ..errors import ConfigError, InvalidUpload
from .context import Context


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("assets", help="stored files: uploads, migrate between stores, verify, gc, usage").add_subparsers(dest="action", required=True, metavar="ACTION")

    add = group.add_parser("add", help="store an image for a user, as if uploaded")
    add.add_argument("path", type=Path, help="a PNG, JPEG or WEBP file")
    add.add_argument("--user", required=True, help="the owner's user name")
    add.set_defaults(handler=add_asset)

    listing = group.add_parser("list", help="a user's uploads, newest first")
    listing.add_argument("--user", required=True, help="the owner's user name")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=list_assets)

    move = group.add_parser("migrate", help="copy the asset store into another (resumable, verified by hash)")
    move.add_argument("--to", required=True, choices=("s3", "local"),
                      help="s3: the local directory into the s3_* bucket; local: the bucket into data_dir/assets")
    move.set_defaults(handler=migrate_assets)

    check = group.add_parser("verify", help="check that every asset row has its stored bytes")
    check.set_defaults(handler=verify_assets)

    gc = group.add_parser("gc", help="remove stored blobs no asset row names, after a grace period")
    gc.add_argument("--grace-hours", type=float, default=24.0, help="keep unreferenced blobs younger than this (default 24)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.set_defaults(handler=gc_assets)

    used = group.add_parser("usage", help="bytes stored per user, largest first")
    used.set_defaults(handler=usage_assets)


def add_asset(ctx: Context, args: argparse.Namespace) -> int:
    user_id = _user_id(ctx, args.user)
    try:
        fh = args.path.open("rb")
    except OSError as exc:
        raise InvalidUpload(f"Cannot read {args.path}: {exc.strerror}.", zh=f"无法读取 {args.path}：{exc.strerror}。") from None
    with fh:
        record = assets.store_upload(
            ctx.db,
            open_blob_store(ctx.settings),
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


def migrate_assets(ctx: Context, args: argparse.Namespace) -> int:
    local = LocalBlobStore(ctx.settings.assets_dir)
    bucket = open_blob_store(dataclasses.replace(ctx.settings, asset_store="s3"))
    source, target = (local, bucket) if args.to == "s3" else (bucket, local)
    report = maintenance.migrate(source, target)
    data = {"copied": report.copied, "skipped": report.skipped, "bytes_copied": report.bytes_copied,
            "damaged": report.damaged}
    text = (f"copied {report.copied} ({human_size(report.bytes_copied)}), already there {report.skipped}, "
            f"damaged {len(report.damaged)}" + "".join(f"\n  damaged: {a}" for a in report.damaged))
    ctx.emit(data, text)
    return 1 if report.damaged else 0


def verify_assets(ctx: Context, args: argparse.Namespace) -> int:
    report = maintenance.verify(ctx.db, open_blob_store(ctx.settings))
    data = {"checked": report.checked, "missing": report.missing,
            "wrong_size": [{"id": a, "recorded": r, "stored": s} for a, r, s in report.wrong_size]}
    lines = [f"checked {report.checked} assets: {len(report.missing)} missing, {len(report.wrong_size)} of the wrong size"]
    lines += [f"  missing: {a}" for a in report.missing]
    lines += [f"  wrong size: {a} (recorded {r}, stored {s})" for a, r, s in report.wrong_size]
    ctx.emit(data, "\n".join(lines))
    return 0 if report.ok else 1


def gc_assets(ctx: Context, args: argparse.Namespace) -> int:
    if args.grace_hours < 0:
        raise ConfigError("--grace-hours must not be negative.", zh="--grace-hours 不能为负数。")
    report = maintenance.collect_garbage(ctx.db, open_blob_store(ctx.settings),
                                         grace=dt.timedelta(hours=args.grace_hours), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    data = {"removed": report.removed, "bytes_removed": report.bytes_removed, "kept_young": report.young,
            "dry_run": args.dry_run}
    ctx.emit(data, f"{verb} {len(report.removed)} unreferenced blobs ({human_size(report.bytes_removed)}); "
                   f"{report.young} younger than the grace period kept")
    return 0


def usage_assets(ctx: Context, args: argparse.Namespace) -> int:
    rows = maintenance.usage(ctx.db)
    lines = [f"{r.username:<24} {r.assets:>7} assets  {human_size(r.bytes):>10}" for r in rows]
    ctx.emit([dataclasses.asdict(r) for r in rows], "\n".join(lines) or "nothing stored")
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
