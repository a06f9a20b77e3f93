"""The upload route and folders: one file within the limit per request, a quota per
session, nothing for signed-out visitors, and old uploads swept away."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from backend.errors import InvalidUpload
from backend.runtime import Backend
from studio.uploads import SESSION_QUOTA_FILES, Uploads
from tests.backend.helpers import CHEAP_HASHER, PASSWORD, make_user
from tests.studio_process import StudioServer

from .conftest import Client, png
from .gradio_protocol import API


def test_uploads_need_a_session_and_come_one_at_a_time(studio: StudioServer, attacker: Client) -> None:
    url = f"{studio.url}{API}/upload"
    assert requests.post(url, files={"files": ("a.png", png())}, timeout=30).status_code == 401
    two = attacker.http.post(url, files=[("files", ("a.png", png())), ("files", ("b.png", png()))], timeout=30)
    assert two.status_code == 400
    limit = 20 * 1024 * 1024  # max_upload_bytes, the shipped default
    big = attacker.http.post(url, files={"files": ("big.png", b"\0" * (limit + 1))}, timeout=60)
    assert big.status_code == 413
    streamed = attacker.http.post(url, data=iter([b"--x\r\n"]), timeout=30,
                                  headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 411  # no Content-Length: no way to refuse it up front


def test_a_session_cannot_fill_the_disk(backend: Backend) -> None:
    import dataclasses

    from fastapi.testclient import TestClient

    from studio.app import create_app

    small = dataclasses.replace(backend, settings=dataclasses.replace(backend.settings, max_upload_bytes=2000))
    make_user(backend.db, "filler")
    with TestClient(create_app(small, wake=lambda: None, password_hasher=CHEAP_HASHER)) as c:
        assert c.post("/login", data={"name": "filler", "password": PASSWORD}).status_code == 200
        codes = [c.post(f"{API}/upload", files={"files": (f"f{i}.png", bytes([i]) * 1900)}).status_code
                 for i in range(SESSION_QUOTA_FILES + 2)]
    assert codes[: SESSION_QUOTA_FILES - 1] == [200] * (SESSION_QUOTA_FILES - 1) and codes[-1] == 429, codes


def test_paths_outside_the_session_folder_are_refused(tmp_path: Path) -> None:
    uploads = Uploads(max_bytes=1000, root=tmp_path)
    mine, theirs = uploads.folder("mine"), uploads.folder("theirs")
    for folder in (mine, theirs):
        (folder / "h").mkdir(parents=True)
        (folder / "h" / "x.png").write_bytes(b"x")
    assert uploads.read(mine / "h" / "x.png", "mine") == b"x"
    link = mine / "h" / "link.png"
    os.symlink(theirs / "h" / "x.png", link)
    for path in (theirs / "h" / "x.png", mine / ".." / theirs.name / "h" / "x.png", link, mine / "h", "/etc/passwd",
                 "", None):
        with pytest.raises(InvalidUpload, match="not uploaded in your current session"):
            uploads.read(path, "mine")
    with pytest.raises(InvalidUpload):
        uploads.read(mine / "h" / "x.png", None)  # no session, no folder


def test_old_uploads_are_swept(tmp_path: Path) -> None:
    uploads = Uploads(max_bytes=1000, root=tmp_path)
    folder = uploads.folder("t") / "hash"
    folder.mkdir(parents=True)
    old, new = folder / "old.png", folder / "new.png"
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert uploads.sweep(max_age=3600) == 1
    assert not old.exists() and new.exists()
    os.utime(new, (an_hour_ago, an_hour_ago))
    assert uploads.sweep(max_age=3600) == 1
    assert list(uploads.root.iterdir()) == []  # emptied folders go too
