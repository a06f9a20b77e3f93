"""The blob-store port: bytes named by their SHA-256 (the ``asset_id``), written once.

Two adapters implement it and pass one contract suite (``tests/contract``):

* :class:`backend.assets.blobs.LocalBlobStore`: a directory (the embedded default, or a
  shared mount);
* :class:`backend.assets.s3_blobs.S3BlobStore`: an S3-compatible bucket (AWS S3, MinIO,
  Ceph RGW, Alibaba OSS, Cloudflare R2).

What every adapter guarantees:

* a write is first *staged* in a local temp file, hashed on the way and capped in size;
  the caller may inspect the staged file (image checks) before committing it; rejected
  bytes never appear under a hash name;
* only complete objects ever appear under a hash name, and an existing one is never
  replaced (the same name always holds the same bytes);
* ``open`` streams; nothing is held whole in memory.

Object stores can also hand out short-lived URLs (:meth:`BlobStore.presign_get`), so a
process without credentials (an agent) can fetch one object; the local store has none.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: str) -> bool:
    """True for 64 lowercase hex digits, the only strings ever turned into blob names."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its hash (the asset id) and its size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class StoredBlob:
    """One entry of :meth:`BlobStore.listing`."""

    asset_id: str
    size: int
    modified: dt.datetime  # aware, UTC


class Staged(Protocol):
    """A complete, hashed temp file not yet visible under its hash (see the module doc)."""

    path: Path
    sha256: str
    size: int

    def commit(self) -> BlobRef: ...


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed blob storage. Safe for several threads and processes."""

    def stage(self, chunks: Iterable[bytes | memoryview], *, max_bytes: int) -> AbstractContextManager[Staged]:
        """Stream ``chunks`` into a temp file; yield it, discarding it unless committed.
        :class:`~backend.errors.InvalidUpload` once more than ``max_bytes`` arrive."""
        ...

    def write(self, chunks: Iterable[bytes | memoryview], *, max_bytes: int) -> BlobRef:
        """Stage and commit a stream of bytes."""
        ...

    def write_bytes(self, data: bytes, *, max_bytes: int | None = None) -> BlobRef: ...

    def exists(self, asset_id: str) -> bool: ...

    def size(self, asset_id: str) -> int:
        """The blob's size; :class:`~backend.errors.NotFound` if it is not stored."""
        ...

    def open(self, asset_id: str) -> BinaryIO:
        """The blob as a readable stream (the caller closes it); ``NotFound``."""
        ...

    def delete(self, asset_id: str) -> None:
        """Remove the blob if stored (garbage collection only)."""
        ...

    def listing(self) -> Iterator[StoredBlob]:
        """Every stored blob, in no particular order."""
        ...

    def presign_get(self, asset_id: str, *, expires: int = 3600) -> str | None:
        """A URL that fetches the blob without credentials for ``expires`` seconds, or
        None for a store that has no such URLs (the local directory)."""
        ...

    def location(self, asset_id: str) -> str:
        """Where the blob lives, for operators (a path or an ``s3://`` URL)."""
        ...

    def close(self) -> None: ...
