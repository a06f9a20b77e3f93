"""``python -m backend assets migrate|verify|gc|usage`` on a real database and Ceph RGW."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from backend import assets
from backend.assets.blobs import LocalBlobStore
from backend.cli import main
from backend.db import Database

from ..conftest import empty_all_tables, s3_settings
from .helpers import make_user
from .test_assets import LIMITS, encode


@pytest.fixture
def cli(_postgres_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        rgw, rgw_bucket: str):  # type: ignore[no-untyped-def]
    empty_all_tables(_postgres_db)
    settings = s3_settings(rgw, rgw_bucket, data_dir=tmp_path / "data")
    monkeypatch.setenv("STUDIO_DATABASE_URL", _postgres_db.url)
    for name in ("data_dir", "s3_endpoint", "s3_bucket", "s3_region", "s3_access_key", "s3_secret_key", "s3_prefix"):
        monkeypatch.setenv(f"STUDIO_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("STUDIO_S3_PATH_STYLE", "true")

    def run(*argv: str) -> tuple[int, object]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        code = main(["--json", *argv])
        out, err = capsys.readouterr()
        assert rgw.secret_key not in out + err
        return code, json.loads(out) if out.strip() else err

    run.settings = settings  # type: ignore[attr-defined]
    run.monkeypatch = monkeypatch  # type: ignore[attr-defined]
    return run


def test_migrate_verify_gc_and_usage(cli, _postgres_db: Database, rgw, rgw_bucket: str) -> None:  # type: ignore[no-untyped-def]
    db, settings = _postgres_db, cli.settings
    local = LocalBlobStore(settings.assets_dir, durable=False)
    alice, bob = make_user(db, "alice").id, make_user(db, "bob").id
    mine = [assets.store_upload(db, local, alice, [encode("PNG", size=(20 + i, 20))], name="a.png", **LIMITS) for i in range(2)]
    theirs = assets.store_upload(db, local, bob, [encode("PNG", size=(50, 10))], name="b.png", **LIMITS)
    orphan = local.write_bytes(b"an upload whose row never committed")

    code, report = cli("assets", "migrate", "--to", "s3")
    assert code == 0 and report["copied"] == 4 and report["damaged"] == []
    code, report = cli("assets", "migrate", "--to", "s3")  # resumable: what is there is skipped
    assert code == 0 and (report["copied"], report["skipped"]) == (0, 4)

    cli.monkeypatch.setenv("STUDIO_ASSET_STORE", "s3")
    code, report = cli("assets", "verify")
    assert code == 0 and report["checked"] == 3 and report["missing"] == []
    rgw.client().delete_object(Bucket=rgw_bucket, Key=settings.s3_prefix + theirs.id)
    code, report = cli("assets", "verify")
    assert code == 1 and report["missing"] == [theirs.id]

    code, report = cli("assets", "gc", "--grace-hours", "1")
    assert code == 0 and report["removed"] == [] and report["kept_young"] == 1
    code, report = cli("assets", "gc", "--grace-hours", "0", "--dry-run")
    assert report["removed"] == [orphan.sha256]
    code, report = cli("assets", "gc", "--grace-hours", "0")
    assert report["removed"] == [orphan.sha256] and report["bytes_removed"] == orphan.size
    code, report = cli("assets", "gc", "--grace-hours", "0")
    assert report["removed"] == []
    assert cli("assets", "verify")[1]["missing"] == [theirs.id]  # gc never touches a named blob

    code, rows = cli("assets", "usage")
    assert {r["username"]: (r["assets"], r["bytes"]) for r in rows} == {
        "alice": (2, mine[0].size + mine[1].size), "bob": (1, theirs.size)}
    assert [r["bytes"] for r in rows] == sorted((r["bytes"] for r in rows), reverse=True)


def test_a_damaged_local_blob_is_reported_not_copied(cli, _postgres_db: Database) -> None:  # type: ignore[no-untyped-def]
    local = LocalBlobStore(cli.settings.assets_dir, durable=False)
    good, bad = local.write_bytes(b"good bytes"), local.write_bytes(b"bad  bytes")
    local.path(bad.sha256).write_bytes(b"rot  bytes")  # same size, other bytes: bit rot
    code, report = cli("assets", "migrate", "--to", "s3")
    assert code == 1 and report["damaged"] == [bad.sha256] and report["copied"] == 1
    cli.monkeypatch.setenv("STUDIO_ASSET_STORE", "s3")
    code, report = cli("assets", "gc", "--grace-hours", "0", "--dry-run")
    assert report["removed"] == [good.sha256]  # in the bucket, no row: unreferenced; the bad one never arrived
