"""Assets: who owns which stored bytes, on top of the blob-store port (:mod:`backend.ports.blob_store`).

An ``Asset`` row describes one blob (by SHA-256); an ``AssetOwner`` row lets one user see
it, for uploads and for job outputs alike. The same bytes uploaded by two users are one
blob, one ``Asset`` and two ``AssetOwner`` rows.

Ordering that keeps files and rows consistent:

* an upload is streamed and inspected as a *staged* temp file; a rejected upload is
  discarded before it ever has a hash name, so nothing is stored and no file that another
  writer stored under the same hash can be removed;
* an accepted upload is written under its hash name (a complete file or object, never
  replaced) *before* the short transaction that records its rows, so a committed row
  always has its bytes and no transaction waits on the object store; a transaction that
  then fails leaves an unreferenced blob, which is harmless (it holds exactly those
  bytes, a retry finds it, ``assets gc`` removes it after its grace period).

Rows are inserted with ``ON CONFLICT DO NOTHING`` on both SQLite and PostgreSQL, which
makes every call idempotent and lets concurrent uploads of the same bytes both succeed.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..ports.blob_store import BlobStore, is_sha256
from ..db import Database
from ..db.models import Asset, AssetOwner, Job, JobOutput, User
from ..errors import InvalidUpload, NotFound
from .images import inspect_image_file

KINDS = ("image", "audio", "video", "other")


@dataclass(frozen=True)
class AssetRecord:
    """An asset as the rest of the system sees it (no ORM object escapes this module)."""

    id: str  # the SHA-256 of the bytes
    size: int
    kind: str
    format: str
    width: int | None
    height: int | None
    seconds: float | None
    created_at: dt.datetime
    #: The owner's display name for it; empty when read without an owner.
    name: str = ""


def store_upload(
    db: Database,
    blobs: BlobStore,
    user_id: int,
    chunks: Iterable[bytes],
    *,
    name: str = "",
    max_bytes: int,
    max_pixels: int,
) -> AssetRecord:
    """Store an uploaded image for ``user_id``; return it with the user's display name.

    ``chunks`` is the upload as a stream; ``name`` is the client's file name, kept only
    for display. Raises :class:`InvalidUpload` (nothing stored) for anything but a
    complete PNG/JPEG/WEBP within ``max_bytes`` and ``max_pixels``, and
    :class:`NotFound` for an unknown user. Uploading the same bytes again is a no-op
    that returns the same asset.
    """
    display = display_name(name)
    with blobs.stage(chunks, max_bytes=max_bytes) as staged:
        info = inspect_image_file(staged.path, max_bytes=max_bytes, max_pixels=max_pixels)
        with db.read() as s:  # an unknown user's bytes are not worth storing
            if s.get(User, user_id) is None:
                raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
        stored = staged.commit()  # the object first, outside any transaction (see the module doc)
    with db.write() as s:
        if s.get(User, user_id) is None:
            raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
        asset = {"id": stored.sha256, "size": stored.size, "kind": "image", "format": info.format}
        _insert_ignore(s, Asset, {**asset, "width": info.width, "height": info.height}, ["id"])
        _insert_ignore(s, AssetOwner, {"asset_id": stored.sha256, "user_id": user_id, "name": display}, ["asset_id", "user_id"])
        return _owned(s, stored.sha256, user_id)


def register_output(
    db: Database,
    blobs: BlobStore,
    *,
    job_id: str,
    graph_node_id: str,
    position: int,
    asset_id: str,
    size: int,
    kind: str,
    format: str,
    width: int | None = None,
    height: int | None = None,
    seconds: float | None = None,
) -> AssetRecord:
    """Record a job output the agent has already stored as a blob, for the job's owner.

    Idempotent: a redelivered output event for the same ``(job_id, graph_node_id, position)``
    changes nothing. Raises :class:`NotFound` if the job or the blob does not exist and
    :class:`InvalidUpload` if the blob's size is not ``size``.
    """
    check_output_blob(blobs, asset_id, size)
    with db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"No job {job_id}.", zh=f"没有任务 {job_id}。")
        record_output_in(s, job_id=job_id, user_id=job.user_id, workflow=job.workflow, graph_node_id=graph_node_id,
                         position=position, asset_id=asset_id, size=size, kind=kind, format=format, width=width,
                         height=height, seconds=seconds)
        return _owned(s, asset_id, job.user_id)


def check_output_blob(blobs: BlobStore, asset_id: str, size: int) -> None:
    """The output's bytes are in the store with the size the agent reported: checked
    before the transaction that records them (no transaction waits on the store).
    :class:`NotFound` for a bad hash or a missing blob, :class:`InvalidUpload` for
    another size."""
    stored = blobs.size(asset_id)
    if stored != size:
        raise InvalidUpload(
            f"The output file {asset_id} is {stored} bytes, not the {size} bytes reported for it.",
            zh=f"输出文件 {asset_id} 大小为 {stored} 字节，与报告的 {size} 字节不符。",
        )


def record_output_in(
    s: Session,
    *,
    job_id: str,
    user_id: int,
    workflow: str,
    graph_node_id: str,
    position: int,
    asset_id: str,
    size: int,
    kind: str,
    format: str,
    width: int | None = None,
    height: int | None = None,
    seconds: float | None = None,
) -> None:
    """The rows of a job output whose blob was checked (:func:`check_output_blob`), in the
    caller's transaction: the asset, its owner ``user_id`` and the job's output."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    values = {"id": asset_id, "size": size, "kind": kind, "format": format.upper()}
    _insert_ignore(s, Asset, {**values, "width": width, "height": height, "seconds": seconds}, ["id"])
    label = f"{workflow}-{job_id[:8]}-{graph_node_id}-{position}.{format.lower()}"
    _insert_ignore(s, AssetOwner, {"asset_id": asset_id, "user_id": user_id, "name": label}, ["asset_id", "user_id"])
    output = {"job_id": job_id, "graph_node_id": graph_node_id, "position": position, "asset_id": asset_id, "kind": kind}
    _insert_ignore(s, JobOutput, output, ["job_id", "graph_node_id", "position"])


def get_asset(db: Database, asset_id: str) -> AssetRecord:
    """The asset ``asset_id`` regardless of owner (for internal use); :class:`NotFound`."""
    with db.read() as s:
        asset = s.get(Asset, asset_id) if is_sha256(asset_id) else None
        if asset is None:
            raise _not_found(asset_id)
        return _record(asset)


def user_can_read(db: Database, user_id: int, asset_id: str, *, is_admin: bool = False) -> bool:
    """True if the asset exists and ``user_id`` owns it (admins may read any asset)."""
    if not is_sha256(asset_id):
        return False
    with db.read() as s:
        if is_admin:
            return s.get(Asset, asset_id) is not None
        return s.get(AssetOwner, (asset_id, user_id)) is not None


def open_for_user(
    db: Database, blobs: BlobStore, user_id: int, asset_id: str, *, is_admin: bool = False
) -> tuple[AssetRecord, BinaryIO]:
    """The asset and its bytes opened for reading, if ``user_id`` may read it.

    Someone else's asset raises the same :class:`NotFound` as a missing one, so ids
    cannot be probed. The caller closes the file.
    """
    with db.read() as s:
        owner = s.get(AssetOwner, (asset_id, user_id)) if is_sha256(asset_id) else None
        asset = s.get(Asset, asset_id) if owner is not None or (is_admin and is_sha256(asset_id)) else None
        if asset is None:
            raise _not_found(asset_id)
        record = _record(asset, owner.name if owner else "")
    return record, blobs.open(asset_id)


def list_uploads(db: Database, user_id: int, *, limit: int = 100) -> list[AssetRecord]:
    """The user's own uploads, newest first (outputs of the user's jobs left out)."""
    produced = select(JobOutput.asset_id).join(Job, Job.id == JobOutput.job_id).where(Job.user_id == user_id)
    stmt = (
        select(Asset, AssetOwner.name)
        .join(AssetOwner, AssetOwner.asset_id == Asset.id)
        .where(AssetOwner.user_id == user_id, Asset.id.not_in(produced))
        .order_by(AssetOwner.created_at.desc(), Asset.id)
        .limit(limit)
    )
    with db.read() as s:
        return [_record(asset, name) for asset, name in s.execute(stmt)]


def display_name(name: str) -> str:
    """The client's file name reduced to something safe to show: no folders, no controls.

    It is never used as a path; this only keeps odd names out of pages and logs.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    return cleaned.strip()[:255]


def _insert_ignore(s: Session, model: type[Any], values: Mapping[str, Any], conflict: list[str]) -> None:
    # Both dialects spell INSERT ... ON CONFLICT DO NOTHING the same way; a plain INSERT
    # would make the second of two concurrent uploads of the same bytes fail.
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    s.execute(dialect.insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict))


def _owned(s: Session, asset_id: str, user_id: int) -> AssetRecord:
    asset = s.get(Asset, asset_id)
    owner = s.get(AssetOwner, (asset_id, user_id))
    assert asset is not None and owner is not None  # inserted (or found) just before
    return _record(asset, owner.name)


def _record(asset: Asset, name: str = "") -> AssetRecord:
    return AssetRecord(
        id=asset.id,
        size=asset.size,
        kind=asset.kind,
        format=asset.format,
        width=asset.width,
        height=asset.height,
        seconds=asset.seconds,
        created_at=asset.created_at,
        name=name,
    )


def _not_found(asset_id: str) -> NotFound:
    return NotFound(f"No asset {asset_id!r} among your files.", zh=f"您的文件中没有资源 {asset_id!r}。")
