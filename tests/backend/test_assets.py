"""backend.assets on the real databases (SQLite and PostgreSQL) with each real blob store:
the local directory and an S3 bucket (a private Ceph RGW)."""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backend import assets
from backend.assets.blobs import LocalBlobStore
from backend.assets.stores import open_blob_store
from backend.cli import assets as assets_cli
from backend.cli.context import Context
from backend.config import Settings
from backend.db import Database
from backend.db.models import Asset, AssetOwner, Job, JobOutput, User
from backend.errors import InvalidUpload, NotFound
from backend.ports.blob_store import BlobStore
from tests.waiting import wait_for

from .fixtures.images import CORPUS_MAX_BYTES, CORPUS_MAX_PIXELS, BadFile, bad_corpus, encode

LIMITS = {"max_bytes": CORPUS_MAX_BYTES, "max_pixels": CORPUS_MAX_PIXELS}


@pytest.fixture(params=["local", "s3"])
def blobs(settings: Settings, request: pytest.FixtureRequest) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(settings.assets_dir)
        return
    from ..conftest import s3_settings

    store = open_blob_store(s3_settings(request.getfixturevalue("rgw"), request.getfixturevalue("rgw_bucket"),
                                        data_dir=settings.data_dir))
    yield store
    store.close()


def make_user(db: Database, name: str) -> int:
    with db.write() as s:
        user = User(name=name, name_key=name.lower(), password_hash="x")
        s.add(user)
        s.flush()
        return user.id


def make_job(db: Database, user_id: int, job_id: str = "job00000000000000000000000000001") -> str:
    with db.write() as s:
        s.add(Job(id=job_id, user_id=user_id, workflow="txt2img", params={}, idempotency_key=job_id, cost=1))
    return job_id


def count(db: Database, model: type) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def stored(blobs: BlobStore) -> list[str]:
    """The ids of every blob in the store."""
    return sorted(b.asset_id for b in blobs.listing())


def upload(db: Database, blobs: BlobStore, user_id: int, data: bytes, name: str = "photo.png") -> assets.AssetRecord:
    chunks = (data[i : i + 1000] for i in range(0, len(data), 1000))
    return assets.store_upload(db, blobs, user_id, chunks, name=name, **LIMITS)


def test_upload_is_stored_and_described(db: Database, blobs: BlobStore) -> None:
    alice = make_user(db, "alice")
    data = encode("WEBP", (80, 60))
    record = upload(db, blobs, alice, data, name="holiday.webp")
    assert (record.format, record.kind, record.width, record.height, record.size) == ("WEBP", "image", 80, 60, len(data))
    assert record.name == "holiday.webp"
    assert stored(blobs) == [record.id]
    assert assets.get_asset(db, record.id).id == record.id
    assert assets.list_uploads(db, alice) == [record]


def test_two_users_same_bytes_one_blob_two_owners(db: Database, blobs: BlobStore) -> None:
    alice, bob = make_user(db, "alice"), make_user(db, "bob")
    data = encode("PNG")
    a = upload(db, blobs, alice, data, name="a.png")
    b = upload(db, blobs, bob, data, name="b.png")
    again = upload(db, blobs, alice, data, name="renamed.png")
    assert a.id == b.id == again.id
    assert (a.name, b.name, again.name) == ("a.png", "b.png", "a.png")  # the first name stays
    assert len(stored(blobs)) == 1
    assert (count(db, Asset), count(db, AssetOwner)) == (1, 2)


def test_concurrent_uploads_of_the_same_bytes(db: Database, blobs: BlobStore) -> None:
    users = [make_user(db, f"user{i}") for i in range(6)]
    data = encode("JPEG", (300, 200))
    results, errors = [], []

    def run(uid: int) -> None:
        try:
            results.append(upload(db, blobs, uid, data))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(uid,)) for uid in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({r.id for r in results}) == 1
    assert (count(db, Asset), count(db, AssetOwner), len(stored(blobs))) == (1, 6, 1)


def test_the_object_is_written_before_the_transaction_that_records_it(db: Database, blobs: BlobStore) -> None:
    """The upload's object goes to the store first; its rows follow in a short transaction
    (here held up by another writer recording the same asset), once each."""
    alice = make_user(db, "alice")
    data = encode("PNG", (90, 70))
    asset_id = hashlib.sha256(data).hexdigest()
    results: list[assets.AssetRecord] = []
    other = db.engine.connect()
    transaction = other.begin()
    other.execute(Asset.__table__.insert().values(id=asset_id, size=len(data), kind="image", format="PNG"))
    worker = threading.Thread(target=lambda: results.append(upload(db, blobs, alice, data)))
    try:
        worker.start()
        wait_for(lambda: blobs.exists(asset_id), 20, "the object stored while the other writer holds the row")
        assert worker.is_alive() and results == [], "the rows wait for the other writer"
    finally:
        transaction.rollback()  # the other writer gives up: this upload records the asset itself
        other.close()
        worker.join(60)
    assert [r.id for r in results] == [asset_id] and stored(blobs) == [asset_id]
    assert (count(db, Asset), count(db, AssetOwner)) == (1, 1)
    assert upload(db, blobs, alice, data) == results[0], "again: the same asset, nothing new"
    assert (count(db, Asset), count(db, AssetOwner)) == (1, 1)


def test_other_users_asset_is_indistinguishable_from_a_missing_one(db: Database, blobs: BlobStore) -> None:
    alice, bob = make_user(db, "alice"), make_user(db, "bob")
    record = upload(db, blobs, alice, encode("PNG"))
    assert assets.user_can_read(db, alice, record.id)
    assert not assets.user_can_read(db, bob, record.id)
    assert assets.user_can_read(db, bob, record.id, is_admin=True)
    found, fh = assets.open_for_user(db, blobs, alice, record.id)
    with fh:
        assert fh.read() == encode("PNG")
    with pytest.raises(NotFound) as foreign:
        assets.open_for_user(db, blobs, bob, record.id)
    with pytest.raises(NotFound) as missing:
        assets.open_for_user(db, blobs, bob, "0" * 64)
    assert str(foreign.value).replace(record.id, "X") == str(missing.value).replace("0" * 64, "X")
    assert assets.list_uploads(db, bob) == []
    admin_view, fh = assets.open_for_user(db, blobs, bob, record.id, is_admin=True)
    fh.close()
    assert admin_view.id == record.id


@pytest.mark.parametrize("asset_id", ["../../etc/passwd", "A" * 64, ""])
def test_malformed_ids_are_simply_not_found(db: Database, blobs: BlobStore, asset_id: str) -> None:
    alice = make_user(db, "alice")
    assert not assets.user_can_read(db, alice, asset_id, is_admin=True)
    with pytest.raises(NotFound):
        assets.open_for_user(db, blobs, alice, asset_id, is_admin=True)
    with pytest.raises(NotFound):
        assets.get_asset(db, asset_id)


@pytest.mark.parametrize("bad", bad_corpus(), ids=lambda b: b.name)
def test_rejected_upload_stores_nothing(db: Database, blobs: BlobStore, bad: BadFile) -> None:
    alice = make_user(db, "alice")
    with pytest.raises(InvalidUpload) as caught:
        upload(db, blobs, alice, bad.data)
    for fragment in bad.expect:
        assert fragment.lower() in str(caught.value).lower()
    assert stored(blobs) == []
    assert (count(db, Asset), count(db, AssetOwner)) == (0, 0)


def test_rejected_upload_keeps_an_existing_blob_with_the_same_bytes(db: Database, blobs: BlobStore) -> None:
    # Same bytes, stricter limits: the rejection must not remove what is already stored.
    alice = make_user(db, "alice")
    data = encode("PNG", (100, 100))
    record = upload(db, blobs, alice, data)
    with pytest.raises(InvalidUpload):
        assets.store_upload(db, blobs, alice, [data], max_bytes=CORPUS_MAX_BYTES, max_pixels=100)
    assert stored(blobs) == [record.id]


def test_unknown_user_stores_nothing(db: Database, blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        upload(db, blobs, 424242, encode("PNG"))
    assert stored(blobs) == [] and count(db, Asset) == 0


def test_client_file_name_is_only_a_display_name(db: Database, blobs: BlobStore) -> None:
    alice = make_user(db, "alice")
    record = upload(db, blobs, alice, encode("PNG"), name="../../etc/\x00passwd\n")
    assert record.name == "passwd"
    assert stored(blobs) == [record.id]
    assert assets.display_name(r"C:\Users\me\cat.jpg") == "cat.jpg"
    assert assets.display_name("x" * 300 + ".png") == "x" * 255


def test_job_output_is_recorded_for_the_job_owner(db: Database, blobs: BlobStore) -> None:
    alice, bob = make_user(db, "alice"), make_user(db, "bob")
    job_id = make_job(db, alice)
    data = encode("PNG", (512, 512))
    ref = blobs.write_bytes(data)  # what the agent does, without the database
    fields = dict(job_id=job_id, graph_node_id="9", position=0, asset_id=ref.sha256, size=ref.size, kind="image", format="png")
    record = assets.register_output(db, blobs, **fields, width=512, height=512)
    assert assets.register_output(db, blobs, **fields, width=512, height=512) == record  # redelivered event
    assert (record.format, record.width, record.name) == ("PNG", 512, f"txt2img-{job_id[:8]}-9-0.png")
    assert assets.user_can_read(db, alice, ref.sha256)
    assert not assets.user_can_read(db, bob, ref.sha256)
    assert (count(db, JobOutput), count(db, AssetOwner)) == (1, 1)
    assert assets.list_uploads(db, alice) == []  # an output, not an upload


def test_output_must_match_a_stored_blob(db: Database, blobs: BlobStore) -> None:
    job_id = make_job(db, make_user(db, "alice"))
    ref = blobs.write_bytes(b"fake audio")
    fields = dict(job_id=job_id, graph_node_id="9", position=0, kind="audio", format="FLAC")
    with pytest.raises(InvalidUpload, match="not the 11 bytes"):
        assets.register_output(db, blobs, asset_id=ref.sha256, size=11, **fields)
    with pytest.raises(NotFound):
        assets.register_output(db, blobs, asset_id="1" * 64, size=10, **fields)
    with pytest.raises(NotFound):
        assets.register_output(db, blobs, asset_id=ref.sha256, size=10, **{**fields, "job_id": "nope"})
    assert count(db, Asset) == 0


def test_uploads_are_listed_newest_first(db: Database, blobs: BlobStore) -> None:
    alice = make_user(db, "alice")
    first = upload(db, blobs, alice, encode("PNG", (10, 10)), name="first.png")
    second = upload(db, blobs, alice, encode("PNG", (20, 20)), name="second.png")
    assert [r.name for r in assets.list_uploads(db, alice)] == ["second.png", "first.png"]
    assert assets.list_uploads(db, alice, limit=1) == [second]
    assert first.id != second.id


def run_cli(db: Database, settings: Settings, argv: list[str], *, as_json: bool) -> int:
    parser = argparse.ArgumentParser()
    assets_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(Context(settings=settings, as_json=as_json, _db=db), args)


def test_cli_add_stores_the_file_for_the_user(
    db: Database, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_user(db, "alice")
    path = tmp_path / "cat.jpg"
    path.write_bytes(encode("JPEG", (64, 32)))
    assert run_cli(db, settings, ["assets", "add", str(path), "--user", "ALICE"], as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["format"], out["width"], out["height"], out["size"], out["name"]) == ("JPEG", 64, 32, path.stat().st_size, "cat.jpg")
    assert LocalBlobStore(settings.assets_dir).exists(out["id"])
    assert run_cli(db, settings, ["assets", "add", str(path), "--user", "alice"], as_json=False) == 0
    assert capsys.readouterr().out.strip() == f"{out['id']}  JPEG  {out['size']} bytes  64x32"
    with pytest.raises(NotFound):
        run_cli(db, settings, ["assets", "add", str(path), "--user", "nobody"], as_json=False)
