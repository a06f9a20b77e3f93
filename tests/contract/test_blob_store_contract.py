"""The blob-store port's contract, run on both adapters: a local directory and S3 (Ceph RGW).

Whatever the store, bytes are named by their SHA-256, written once, never visible before
they are complete, never kept when rejected, and read back as streams.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from backend.assets.blobs import LocalBlobStore
from backend.assets.s3_blobs import S3BlobStore
from backend.assets.stores import open_blob_store
from backend.errors import InvalidUpload, NotFound
from backend.ports.blob_store import BlobStore

from .. import s3server
from ..conftest import s3_settings

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        blobs: BlobStore = LocalBlobStore(tmp_path / "assets", durable=False)
    else:
        rgw: s3server.RGW = request.getfixturevalue("rgw")
        settings = s3_settings(rgw, request.getfixturevalue("rgw_bucket"), data_dir=tmp_path / "data")
        blobs = open_blob_store(settings)
    yield blobs
    blobs.close()


def ids(store: BlobStore) -> list[str]:
    return sorted(b.asset_id for b in store.listing())


def read_all(store: BlobStore, asset_id: str) -> bytes:
    with store.open(asset_id) as fh:
        return fh.read()


def test_bytes_are_stored_under_their_hash(store: BlobStore) -> None:
    data = os.urandom(3000)
    ref = store.write_bytes(data)
    assert (ref.sha256, ref.size) == (hashlib.sha256(data).hexdigest(), 3000)
    assert store.exists(ref.sha256) and store.size(ref.sha256) == 3000
    assert read_all(store, ref.sha256) == data
    assert ids(store) == [ref.sha256]


def test_same_bytes_are_stored_once(store: BlobStore) -> None:
    data = b"same bytes" * 100
    first, second = store.write_bytes(data), store.write([data[:7], data[7:]], max_bytes=10_000)
    assert first == second and ids(store) == [first.sha256]


def test_listing_gives_sizes_and_times(store: BlobStore) -> None:
    a, b = store.write_bytes(b"a" * 10), store.write_bytes(b"b" * 20)
    listed = {blob.asset_id: blob for blob in store.listing()}
    assert {k: v.size for k, v in listed.items()} == {a.sha256: 10, b.sha256: 20}
    assert all(v.modified.tzinfo is not None for v in listed.values())


def test_size_cap_stops_the_stream_and_leaves_nothing(store: BlobStore) -> None:
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            sent.append(1)
            yield b"x" * 1000

    with pytest.raises(InvalidUpload, match="upload limit"):
        store.write(endless(), max_bytes=10_000)
    assert len(sent) == 11  # stopped right after passing the cap
    assert ids(store) == []


def test_failing_stream_leaves_nothing(store: BlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"part"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write(broken(), max_bytes=1000)
    assert ids(store) == []


def test_staged_bytes_are_invisible_until_committed(store: BlobStore) -> None:
    with store.stage([b"maybe"], max_bytes=100) as staged:
        assert staged.path.read_bytes() == b"maybe"  # inspectable on local disk
        assert not store.exists(staged.sha256)
    assert not store.exists(staged.sha256) and not staged.path.exists() and ids(store) == []
    with store.stage([b"yes"], max_bytes=100) as staged:
        ref = staged.commit()
    assert store.exists(ref.sha256) and not staged.path.exists()


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "A" * 64, "g" * 64, "a" * 63, "a" * 64 + "/x"])
def test_only_sha256_names_an_object(store: BlobStore, bad: str) -> None:
    assert not store.exists(bad)
    for call in (store.open, store.size):
        with pytest.raises(NotFound):
            call(bad)


def test_missing_blob_is_not_found(store: BlobStore) -> None:
    with pytest.raises(NotFound):
        store.open("0" * 64)
    with pytest.raises(NotFound):
        store.size("0" * 64)
    store.delete("0" * 64)  # deleting what is not there is no error


def test_delete_removes_the_blob(store: BlobStore) -> None:
    keep, drop = store.write_bytes(b"keep"), store.write_bytes(b"drop")
    store.delete(drop.sha256)
    assert ids(store) == [keep.sha256] and not store.exists(drop.sha256)


def test_concurrent_writers_of_the_same_bytes(store: BlobStore) -> None:
    data = os.urandom(300_000)
    refs, errors = [], []

    def write() -> None:
        try:
            refs.append(store.write_bytes(data))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({r.sha256 for r in refs}) == 1 and len(refs) == 6
    assert ids(store) == [refs[0].sha256] and read_all(store, refs[0].sha256) == data


def test_a_large_file_streams_both_ways(store: BlobStore) -> None:
    # 12 MiB in 1 MiB chunks; the S3 store of this test uploads it in parts (see below).
    chunk = os.urandom(MiB)
    digest = hashlib.sha256()
    for _ in range(12):
        digest.update(chunk)
    ref = store.write((chunk for _ in range(12)), max_bytes=64 * MiB)
    assert (ref.sha256, ref.size) == (digest.hexdigest(), 12 * MiB)
    back = hashlib.sha256()
    with store.open(ref.sha256) as fh:
        while piece := fh.read(MiB):
            assert len(piece) <= MiB
            back.update(piece)
    assert back.hexdigest() == ref.sha256


def test_presigned_url_or_none(store: BlobStore) -> None:
    ref = store.write_bytes(b"for an agent")
    url = store.presign_get(ref.sha256, expires=60)
    if isinstance(store, LocalBlobStore):
        assert url is None and store.location(ref.sha256).endswith(ref.sha256)
        return
    assert url is not None and requests.get(url, timeout=10).content == b"for an agent"
    assert store.location(ref.sha256).startswith("s3://")


# ---- S3 only: what the bucket does not allow, and large files in parts --------------------


@pytest.fixture
def s3(rgw: s3server.RGW, rgw_bucket: str, tmp_path: Path) -> Iterator[S3BlobStore]:
    settings = s3_settings(rgw, rgw_bucket, data_dir=tmp_path / "data")
    store = S3BlobStore(bucket=rgw_bucket, endpoint=rgw.endpoint, region="us-east-1", access_key=rgw.access_key,
                        secret_key=rgw.secret_key, path_style=True, prefix=settings.s3_prefix,
                        staging_dir=tmp_path / "staging", multipart_threshold=5 * MiB, part_size=5 * MiB)
    yield store
    store.close()


def test_multipart_upload_leaves_one_complete_object(s3: S3BlobStore, rgw: s3server.RGW, rgw_bucket: str) -> None:
    data = os.urandom(12 * MiB + 123)
    ref = s3.write_bytes(data)
    assert s3.size(ref.sha256) == len(data)
    assert hashlib.sha256(read_all(s3, ref.sha256)).hexdigest() == ref.sha256
    client = rgw.client()
    # Three parts went up; none is left pending under any key.
    pending = client.list_multipart_uploads(Bucket=rgw_bucket, Prefix=s3.prefix).get("Uploads", [])
    assert pending == [] and ids(s3) == [ref.sha256]
    assert list((s3._staging).iterdir()) == []  # the staged file is gone too


def test_the_bucket_is_not_public(s3: S3BlobStore, rgw: s3server.RGW, rgw_bucket: str) -> None:
    ref = s3.write_bytes(b"private")
    plain = f"{rgw.endpoint}/{rgw_bucket}/{s3.prefix}{ref.sha256}"
    assert requests.get(plain, timeout=10).status_code == 403
    url = s3.presign_get(ref.sha256, expires=60)
    assert url is not None
    # The signature covers the key: it opens nothing else, and a PUT with it is refused.
    other = s3.write_bytes(b"other")
    assert requests.get(url.replace(ref.sha256, other.sha256), timeout=10).status_code == 403
    assert requests.put(url, data=b"overwrite", timeout=10).status_code == 403
    assert read_all(s3, ref.sha256) == b"private"


def test_an_existing_object_is_never_overwritten(s3: S3BlobStore, rgw: s3server.RGW, rgw_bucket: str) -> None:
    ref = s3.write_bytes(b"original bytes")
    # Someone writes other bytes under the name, bypassing the store: the store's next
    # write of the real bytes finds the name taken with the same size and leaves it.
    rgw.client().put_object(Bucket=rgw_bucket, Key=s3.prefix + ref.sha256, Body=b"forged  bytes!")
    s3.write_bytes(b"original bytes")
    assert read_all(s3, ref.sha256) == b"forged  bytes!"


def test_credentials_are_never_shown(rgw: s3server.RGW, rgw_bucket: str, tmp_path: Path) -> None:
    settings = s3_settings(rgw, rgw_bucket, data_dir=tmp_path)
    store = open_blob_store(settings)
    for text in (repr(settings), repr(store), str(settings)):
        assert rgw.secret_key not in text and rgw.access_key not in text
    store.close()


def _patient(rgw: s3server.RGW, bucket: str, prefix: str, tmp_path: Path, attempts: int) -> S3BlobStore:
    return S3BlobStore(bucket=bucket, endpoint=rgw.endpoint, region="us-east-1", access_key=rgw.access_key,
                       secret_key=rgw.secret_key, path_style=True, prefix=prefix, staging_dir=tmp_path / "patient",
                       connect_timeout=1, read_timeout=5, attempts=attempts)


def test_an_upload_interrupted_by_the_store_going_away_is_retried(s3: S3BlobStore, rgw: s3server.RGW, rgw_bucket: str,
                                                                 tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    patient = _patient(rgw, rgw_bucket, s3.prefix, tmp_path, attempts=10)
    rgw.stop_gateway()
    back = threading.Timer(1.5, rgw.start_gateway)
    back.start()
    try:
        data = os.urandom(2 * MiB)
        with caplog.at_level("WARNING", logger="backend.assets.s3_blobs.S3BlobStore"):
            ref = patient.write_bytes(data)  # fails while the gateway is away, then goes through
    finally:
        back.join()
        if not rgw.answers():
            rgw.start_gateway()
    assert "retrying" in caplog.text
    assert read_all(s3, ref.sha256) == data and ids(s3) == [ref.sha256]
    assert list((tmp_path / "patient").iterdir()) == []
    patient.close()


def test_a_store_away_for_good_keeps_nothing_and_says_so(s3: S3BlobStore, rgw: s3server.RGW, rgw_bucket: str,
                                                        tmp_path: Path) -> None:
    from backend.errors import AssetStoreUnavailable, Unavailable

    impatient = _patient(rgw, rgw_bucket, s3.prefix, tmp_path, attempts=2)
    rgw.stop_gateway()
    try:
        with pytest.raises(AssetStoreUnavailable, match="not available") as caught:
            impatient.write_bytes(b"nowhere to go")
        assert isinstance(caught.value, Unavailable)  # callers retry later, like for the bus
        with pytest.raises(AssetStoreUnavailable):
            impatient.open("0" * 64)
    finally:
        rgw.start_gateway()
    assert ids(s3) == [] and list((tmp_path / "patient").iterdir()) == []
    impatient.close()
