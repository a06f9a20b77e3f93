"""The local adapter of the blob-store port (:mod:`backend.ports.blob_store`): bytes named
by their SHA-256 in a directory, files only, no database.

Layout: ``root/ab/cd/<sha256>`` for a hash starting ``abcd``, and ``root/tmp/`` for files
being written. A write streams into a temp file on the same filesystem (so the final
rename is atomic), hashing as it goes and stopping as soon as the size cap is passed;
only complete, flushed files ever appear under a hash name. The same bytes are stored
once: a second write of them just drops its temp file. A write that fails (a full disk)
removes its temp file; one whose process was killed leaves it, named after its host and
process id, and the next store opened on that host removes it (any host removes temp
files older than :data:`STALE_PART_SECONDS`: the store may be shared by several hosts).

The agent stores outputs through the port and never opens the SQL database; the
backend records ownership separately (``backend.assets.records``). The S3 adapter
(``backend.assets.s3_blobs``) stages its writes with :func:`write_hashed` too.

Throughput matters (uploads and outputs pass through here): data moves in 1 MiB chunks,
each chunk is hashed on the caller's thread while a writer thread writes it, without
joining or copying.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import datetime as dt
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import AssetStoreError, InvalidUpload, NotFound
from ..ports.blob_store import BlobRef, StoredBlob, is_sha256

__all__ = ["CHUNK_SIZE", "BlobRef", "LocalBlobRef", "LocalBlobStore", "StagedBlob", "check_size", "human_size",
           "is_sha256", "read_chunks", "write_hashed"]

CHUNK_SIZE = 1024 * 1024
#: A temp file untouched for this long belongs to a write that died (whatever host).
STALE_PART_SECONDS = 3600.0
_HOST = socket.gethostname().replace("-", "_")

log = logging.getLogger("backend.assets.blobs.LocalBlobStore")


@dataclass(frozen=True)
class LocalBlobRef(BlobRef):
    """A blob of the local store, with the file it lives in."""

    path: Path


def human_size(size: int) -> str:
    """``20 MiB``, ``1.5 KiB``, ``12 B``: for messages."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} B"


def check_size(size: int, *, max_bytes: int) -> None:
    """Refuse an empty file or one of ``size`` bytes over ``max_bytes``."""
    if size == 0:
        raise InvalidUpload("The file is empty.", zh="文件是空的。")
    if size > max_bytes:
        raise _too_large(max_bytes)


def _too_large(max_bytes: int) -> InvalidUpload:
    # No actual size in the message: a stream is cut off at the limit, so it is unknown.
    return InvalidUpload(
        f"The file is larger than the {human_size(max_bytes)} upload limit. Please upload a smaller file.",
        zh=f"文件超过了 {human_size(max_bytes)} 的上传上限，请上传更小的文件。",
    )


def read_chunks(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The contents of an open binary file in ``chunk_size`` pieces."""
    while chunk := fileobj.read(chunk_size):
        yield chunk


class StagedBlob:
    """A complete, hashed temp file that is not yet visible under its hash.

    Inspect it through :attr:`path`, then :meth:`commit` it or let
    :meth:`BlobStore.stage` discard it. Rejected data therefore never enters the
    content-addressed namespace, so rejecting it can never remove a file that someone
    else stored under the same hash meanwhile.
    """

    def __init__(self, store: LocalBlobStore, *, path: Path, sha256: str, size: int) -> None:
        self._store = store
        self.path = path
        self.sha256 = sha256
        self.size = size
        self.committed: LocalBlobRef | None = None

    def commit(self) -> LocalBlobRef:
        """Move the file to its hash name (or drop it if that blob is already stored)."""
        if self.committed is None:
            with edge():
                self.committed = self._store._install(self.path, self.sha256, self.size)
        return self.committed


class LocalBlobStore:
    """Files under ``root`` named by SHA-256. Safe for several threads and processes.

    ``durable=False`` skips the fsyncs; only for stores that may be lost (tests, demos).
    On a real disk the fsync, not the hashing, is what bounds a write's speed.
    """

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = Path(root)
        self.durable = durable
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._remove_dead_parts()

    def _remove_dead_parts(self) -> None:
        """Delete temp files of writes whose process died (SIGKILL, a crash)."""
        now = time.time()
        for part in self._tmp.glob("*.part"):
            host, _, rest = part.name.partition("-")
            pid = rest.partition("-")[0]
            try:
                dead = (host == _HOST and pid.isdigit() and not _alive(int(pid))) or \
                    now - part.stat().st_mtime > STALE_PART_SECONDS
                if dead:
                    part.unlink()
                    log.info("removed %s, left by a write that never finished", part.name)
            except OSError:
                pass  # gone meanwhile, or not ours to remove

    @contextlib.contextmanager
    def stage(self, chunks: Iterable[bytes | memoryview], *, max_bytes: int) -> Iterator[StagedBlob]:
        """Stream ``chunks`` into a temp file; yield it, removing it unless committed.

        Raises :class:`InvalidUpload` (and leaves nothing behind) once more than
        ``max_bytes`` arrive.
        """
        path = self._tmp / f"{_HOST}-{os.getpid()}-{secrets.token_hex(12)}.part"
        try:
            sha256, size = write_hashed(path, chunks, max_bytes, durable=self.durable)
            staged = StagedBlob(self, path=path, sha256=sha256, size=size)
            yield staged
        finally:
            # After a commit the temp name is gone (renamed or already removed); after a
            # failed write (a full disk) this removes the part that was written.
            path.unlink(missing_ok=True)

    def write(self, chunks: Iterable[bytes | memoryview], *, max_bytes: int) -> LocalBlobRef:
        """Store a stream of bytes; raises :class:`InvalidUpload` over ``max_bytes``."""
        with self.stage(chunks, max_bytes=max_bytes) as staged:
            return staged.commit()

    def write_bytes(self, data: bytes, *, max_bytes: int | None = None) -> LocalBlobRef:
        """Store ``data`` (limited to ``max_bytes`` if given)."""
        view = memoryview(data)
        # Slices of a memoryview share the buffer: 1 MiB pieces without copying, so
        # writing (and write-back) overlaps hashing from the first MiB on.
        pieces = (view[i : i + CHUNK_SIZE] for i in range(0, len(view), CHUNK_SIZE))
        return self.write(pieces, max_bytes=len(data) if max_bytes is None else max_bytes)

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (whether or not it exists)."""
        if not is_sha256(sha256):
            raise NotFound(f"{sha256!r} is not a valid asset id.", zh=f"{sha256!r} 不是有效的资源编号。")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """The blob opened for reading; :class:`NotFound` if it is not stored."""
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise self._missing(sha256) from None

    def size(self, sha256: str) -> int:
        """The blob's size in bytes; :class:`NotFound` if it is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise self._missing(sha256) from None

    def delete(self, asset_id: str) -> None:
        if is_sha256(asset_id):
            self.path(asset_id).unlink(missing_ok=True)

    def listing(self) -> Iterator[StoredBlob]:
        for top in self.root.iterdir():
            if len(top.name) != 2 or not top.is_dir():
                continue  # tmp/ and anything not ours
            for path in top.glob("*/*"):
                if is_sha256(path.name):
                    with contextlib.suppress(FileNotFoundError):
                        st = path.stat()
                        yield StoredBlob(path.name, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc))

    def presign_get(self, asset_id: str, *, expires: int = 3600) -> str | None:
        return None  # whoever reads this store reads the directory itself

    def location(self, asset_id: str) -> str:
        return str(self.path(asset_id))

    def close(self) -> None:
        pass

    def _missing(self, sha256: str) -> NotFound:
        return NotFound(f"No stored file for asset {sha256}.", zh=f"找不到资源 {sha256} 的文件。")

    def _install(self, temp: Path, sha256: str, size: int) -> LocalBlobRef:
        final = self.path(sha256)
        try:
            if final.stat().st_size == size:
                temp.unlink()
                return LocalBlobRef(sha256, size, final)
            # Same name, wrong size: cannot be our bytes (a damaged copy); replace it.
            log.warning("Replacing blob %s: stored size differs from its content", sha256)
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
        # Concurrent writers of the same hash both rename identical bytes: harmless.
        os.replace(temp, final)
        if self.durable:
            _fsync_dir(final.parent)
        return LocalBlobRef(sha256, size, final)


@contextlib.contextmanager
def edge() -> Iterator[None]:
    """A failing disk (full, over quota, read-only, broken) is an :class:`AssetStoreError`
    that says so; the caller's ``finally`` removes what was written."""
    try:
        yield
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        log.error("the asset store could not write a file: %s", exc)
        raise AssetStoreError(
            f"The asset store could not save the file ({reason}). Nothing was kept; "
            "an administrator must free space or repair the store.",
            zh=f"资源存储无法保存文件（{reason}），未保留任何内容；需要管理员释放空间或修复存储。",
        ) from exc


def write_hashed(path: Path, chunks: Iterable[bytes | memoryview], max_bytes: int, *, durable: bool) -> tuple[str, int]:
    """Write ``chunks`` to the new file ``path`` (hashing on the way); its hash and size."""
    digest = hashlib.sha256()
    size = 0
    # O_EXCL: a fresh name, never an existing file or a planted symlink.
    with edge():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    with _FileWriter(fd) as writer:
        for chunk in chunks:  # a failing source (a dropped upload) raises its own error
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            with edge():
                writer.put(chunk)  # written by the writer thread while this thread hashes it
            digest.update(chunk)
        with edge():
            writer.finish(durable=durable)
    return digest.hexdigest(), size


class _FileWriter:
    """Writes chunks to ``fd`` on a thread of its own, then fsyncs and closes it.

    Hashing and writing both release the GIL, so doing them on two threads makes a
    store cost about as much as hashing alone instead of hashing plus writing. The
    queue is short (a few MiB in flight), and chunks are queued by reference: callers
    must not modify a chunk after yielding it.
    """

    _DEPTH = 4

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(self._DEPTH)
        self._error: BaseException | None = None
        self._done = threading.Event()
        _writers().submit(self._run)

    def put(self, chunk: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self, *, durable: bool) -> None:
        """Wait until everything is written (and synced if ``durable``); re-raise a write error."""
        self._queue.put(None)
        self._done.wait()
        if self._error is not None:
            raise self._error
        # The file must be on disk before its hash name is: a crash must never leave a
        # short file under a name that later writes would trust and skip.
        if durable:
            os.fsync(self._fd)

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                if self._error is not None:
                    continue  # keep draining so the producer never blocks on a full queue
                try:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(self._fd, view) :]
                except OSError as exc:
                    self._error = exc
        finally:
            self._done.set()

    def __enter__(self) -> _FileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done.is_set():  # an error or a size-cap stop before finish()
            self._queue.put(None)
            self._done.wait()
        os.close(self._fd)


_WRITERS: concurrent.futures.ThreadPoolExecutor | None = None
_WRITERS_LOCK = threading.Lock()


def _writers() -> concurrent.futures.ThreadPoolExecutor:
    """Writer threads kept between stores: starting a thread per store made the caller
    wait for the new thread to be scheduled, which on a busy machine cost more than
    writing a megabyte. Each store occupies one thread until its last chunk is written;
    more stores at once than threads wait their turn in the pool's queue (the caller's
    chunk queue is bounded, so they wait without buffering)."""
    global _WRITERS
    if _WRITERS is None:
        with _WRITERS_LOCK:
            if _WRITERS is None:
                _WRITERS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="blob-writer")
    return _WRITERS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable before the database records the blob.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
