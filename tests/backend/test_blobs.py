"""backend.assets.blobs (the local store) on a real directory: layout, dedupe, size cap, no stray files."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.assets.blobs import CHUNK_SIZE, LocalBlobStore, is_sha256, read_chunks
from backend.errors import InvalidUpload, NotFound


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_bytes_are_stored_under_their_hash(store: LocalBlobStore) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 17)
    sha = hashlib.sha256(data).hexdigest()
    ref = store.write_bytes(data)
    assert (ref.sha256, ref.size) == (sha, len(data))
    assert ref.path == store.root / sha[:2] / sha[2:4] / sha == store.path(sha)
    assert ref.path.read_bytes() == data
    assert store.exists(sha) and store.size(sha) == len(data)
    with store.open(sha) as fh:
        assert fh.read() == data
    assert files_under(store.root) == [ref.path]


def test_same_bytes_are_stored_once(store: LocalBlobStore) -> None:
    first = store.write_bytes(b"same bytes")
    second = store.write(iter([b"same ", b"bytes"]), max_bytes=100)
    assert first == second
    assert files_under(store.root) == [first.path]


def test_stream_and_bytes_give_the_same_hash(store: LocalBlobStore) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 5)
    streamed = store.write(read_chunks(io.BytesIO(data)), max_bytes=len(data))
    assert streamed.sha256 == hashlib.sha256(data).hexdigest()
    assert [len(c) for c in read_chunks(io.BytesIO(data))] == [CHUNK_SIZE, CHUNK_SIZE, 5]


def test_size_cap_stops_the_stream_and_leaves_nothing(store: LocalBlobStore) -> None:
    pulled = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield b"x" * 1000

    with pytest.raises(InvalidUpload, match="larger than the 9.8 KiB upload limit") as caught:
        store.write(endless(), max_bytes=10_000)
    assert "上限" in caught.value.zh
    assert len(pulled) == 11  # stopped at the first chunk over the limit
    assert files_under(store.root) == []


def test_exact_limit_is_allowed(store: LocalBlobStore) -> None:
    assert store.write([b"12345"], max_bytes=5).size == 5


def test_failing_stream_leaves_nothing(store: LocalBlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial data"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write(broken(), max_bytes=1000)
    assert files_under(store.root) == []


def test_staged_blob_is_invisible_until_committed(store: LocalBlobStore) -> None:
    with store.stage([b"maybe"], max_bytes=100) as staged:
        assert staged.path.read_bytes() == b"maybe"
        assert not store.exists(staged.sha256)
    assert files_under(store.root) == []
    with store.stage([b"yes"], max_bytes=100) as staged:
        ref = staged.commit()
        assert staged.commit() == ref
    assert files_under(store.root) == [ref.path]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, "g" * 64, "", "a" * 64 + "/x"])
def test_only_lowercase_sha256_becomes_a_path(store: LocalBlobStore, bad: str) -> None:
    assert not is_sha256(bad)
    assert not store.exists(bad)
    for call in (store.path, store.open, store.size):
        with pytest.raises(NotFound):
            call(bad)


def test_missing_blob_is_not_found(store: LocalBlobStore) -> None:
    with pytest.raises(NotFound):
        store.open("0" * 64)
    with pytest.raises(NotFound):
        store.size("0" * 64)


def test_concurrent_writers_of_the_same_bytes(store: LocalBlobStore) -> None:
    data = os.urandom(CHUNK_SIZE + 1)
    refs = []

    def write() -> None:
        refs.append(store.write_bytes(data))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(refs)) == 1 and len(refs) == 8
    assert files_under(store.root) == [refs[0].path]
    assert refs[0].path.read_bytes() == data


def test_damaged_copy_is_replaced(store: LocalBlobStore) -> None:
    ref = store.write_bytes(b"the real content")
    ref.path.write_bytes(b"short")  # e.g. left by a crash on a filesystem without fsync
    assert store.write_bytes(b"the real content") == ref
    assert ref.path.read_bytes() == b"the real content"


def test_non_durable_store_behaves_the_same(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "fast", durable=False)
    ref = store.write_bytes(b"quick")
    assert ref.path.read_bytes() == b"quick"
