"""Operator chores on the asset store: migrate it, verify it, collect its garbage, measure it.

* :func:`migrate` copies every blob of one store into another (the local directory into a
  bucket); it skips what the target already holds, so an interrupted run just runs again,
  and it re-hashes every blob on the way, so a damaged source file is reported, never
  copied under its name.
* :func:`verify` checks that every asset row has its blob, of the recorded size.
* :func:`collect_garbage` removes blobs no asset row names (an upload whose transaction
  failed, an output whose event was never applied, old previews) once they are older
  than a grace period, which keeps a write in flight (blob stored, row not yet
  committed) safe.
* :func:`usage` sums the stored bytes per user: all of them (what the admin sees) and
  their own uploads (what the storage quota of :mod:`backend.jobs.limits` counts).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import case, exists, func, select

from ..db import Database
from ..db.models import Asset, AssetOwner, Job, JobOutput, User
from ..errors import InvalidUpload
from ..ports.blob_store import BlobStore
from .blobs import read_chunks

log = logging.getLogger(__name__)


@dataclass
class MigrationReport:
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    #: Blobs whose bytes do not hash to their name (left where they are, not copied).
    damaged: list[str] = field(default_factory=list)


def migrate(source: BlobStore, target: BlobStore, *, progress: Callable[[str], None] = lambda _: None) -> MigrationReport:
    """Copy every blob of ``source`` missing from ``target``, verified by its hash."""
    report = MigrationReport()
    for blob in source.listing():
        try:
            if target.size(blob.asset_id) == blob.size:
                report.skipped += 1
                continue
        except Exception:  # NotFound, mostly; anything else shows in the write below
            pass
        with source.open(blob.asset_id) as fh:
            try:
                with target.stage(read_chunks(fh), max_bytes=blob.size) as staged:
                    if staged.sha256 != blob.asset_id or staged.size != blob.size:
                        report.damaged.append(blob.asset_id)
                        log.error("blob %s is damaged (its bytes hash to %s); not copied", blob.asset_id, staged.sha256)
                        continue
                    staged.commit()
            except InvalidUpload:  # longer than the listing said: changed under us
                report.damaged.append(blob.asset_id)
                continue
        report.copied += 1
        report.bytes_copied += blob.size
        progress(blob.asset_id)
    return report


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    #: (asset id, recorded size, stored size)
    wrong_size: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.wrong_size


def verify(db: Database, store: BlobStore) -> VerifyReport:
    """Every asset row against the store (one listing, not one request per row)."""
    stored = {blob.asset_id: blob.size for blob in store.listing()}
    report = VerifyReport()
    with db.read() as s:
        for asset_id, size in s.execute(select(Asset.id, Asset.size).order_by(Asset.id)):
            report.checked += 1
            if asset_id not in stored:
                report.missing.append(asset_id)
            elif stored[asset_id] != size:
                report.wrong_size.append((asset_id, size, stored[asset_id]))
    return report


@dataclass
class GarbageReport:
    removed: list[str] = field(default_factory=list)
    bytes_removed: int = 0
    #: Unreferenced but younger than the grace period: kept this time.
    young: int = 0


def collect_garbage(
    db: Database, store: BlobStore, *, grace: dt.timedelta, dry_run: bool = False, now: dt.datetime | None = None,
) -> GarbageReport:
    """Remove the blobs that no asset row names and that are older than ``grace``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    candidates = [blob for blob in store.listing()]
    with db.read() as s:
        known = set(s.scalars(select(Asset.id)))
    report = GarbageReport()
    for blob in candidates:
        if blob.asset_id in known:
            continue
        if now - blob.modified < grace:
            report.young += 1
            continue
        # Checked again just before deleting: a row committed since the first read keeps it.
        with db.read() as s:
            if s.get(Asset, blob.asset_id) is not None:
                continue
        if not dry_run:
            store.delete(blob.asset_id)
        report.removed.append(blob.asset_id)
        report.bytes_removed += blob.size
    return report


@dataclass(frozen=True)
class UserUsage:
    user_id: int
    username: str
    assets: int
    bytes: int
    #: Of ``bytes``, the user's own uploads (masks drawn in the studio included); the
    #: outputs of their jobs are not counted against their storage quota.
    upload_bytes: int


def usage(db: Database, *, user_id: int | None = None) -> list[UserUsage]:
    """Stored bytes per user (only ``user_id``'s if given), largest first (an asset two
    users own counts for both)."""
    produced = exists().where(JobOutput.asset_id == Asset.id, Job.id == JobOutput.job_id, Job.user_id == User.id)
    stmt = (
        select(User.id, User.name, func.count(Asset.id), func.coalesce(func.sum(Asset.size), 0),
               func.coalesce(func.sum(case((produced, 0), else_=Asset.size)), 0))
        .join(AssetOwner, AssetOwner.user_id == User.id)
        .join(Asset, Asset.id == AssetOwner.asset_id)
        .group_by(User.id, User.name)
        .order_by(func.sum(Asset.size).desc(), User.id)
    )
    if user_id is not None:
        stmt = stmt.where(User.id == user_id)
    with db.read() as s:
        return [UserUsage(uid, name, int(count), int(size), int(uploads))
                for uid, name, count, size, uploads in s.execute(stmt)]
