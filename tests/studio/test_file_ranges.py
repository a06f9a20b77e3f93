"""Byte ranges on the file route, over real HTTP (uvicorn on a free port): a video player
seeks with them and Safari plays no video without them. The owner check comes first: a
range of someone else's file is the same 404 as a missing one."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
import uvicorn

from backend import assets
from backend.runtime import Backend
from studio.files import byte_range
from tests.backend.helpers import PASSWORD, charged_job, make_user
from tests.waiting import wait_for

from ..services import free_port

#: A stand-in for a short clip: every byte differs from its neighbours, so a wrong
#: offset shows.
VIDEO = bytes(range(256)) * 40 + b"the end"


@pytest.fixture
def served(backend: Backend) -> Iterator[str]:
    """The studio app served by uvicorn in a thread; its base URL."""
    from studio.app import create_app
    from tests.backend.helpers import CHEAP_HASHER

    app = create_app(backend, wake=lambda: None, password_hasher=CHEAP_HASHER)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def signed_in(base: str, name: str) -> requests.Session:
    session = requests.Session()
    r = session.post(base + "/login", data={"name": name, "password": PASSWORD}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return session


def a_video_output(backend: Backend, owner_name: str) -> str:
    owner = make_user(backend.db, owner_name, credits=10)
    job = charged_job(backend.db, owner, 2)
    blob = backend.blobs.write_bytes(VIDEO)
    assets.register_output(backend.db, backend.blobs, job_id=job.id, graph_node_id="9", position=0,
                           asset_id=blob.sha256, size=len(VIDEO), kind="video", format="mp4", seconds=1.0)
    return blob.sha256


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_the_file_route_answers_byte_ranges_to_the_owner_only(backend: Backend, served: str) -> None:
    asset = a_video_output(backend, "vic")
    make_user(backend.db, "wes")
    url = f"{served}/files/{asset}"
    owner, other = signed_in(served, "vic"), signed_in(served, "wes")
    size = len(VIDEO)

    whole = owner.get(url, timeout=30)  # no Range: all of it, and the offer of ranges
    assert whole.status_code == 200 and whole.content == VIDEO
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(size)

    part = owner.get(url, headers={"Range": "bytes=100-299"}, timeout=30)
    assert part.status_code == 206 and part.content == VIDEO[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{size}" and part.headers["content-length"] == "200"
    assert part.headers["content-type"] == "video/mp4" and "nosniff" in part.headers["x-content-type-options"]

    rest = owner.get(url, headers={"Range": "bytes=10000-"}, timeout=30)  # open-ended, as players ask
    assert rest.status_code == 206 and rest.content == VIDEO[10000:]
    assert rest.headers["content-range"] == f"bytes 10000-{size - 1}/{size}"

    tail = owner.get(url, headers={"Range": "bytes=-7"}, timeout=30)  # a suffix: the last 7 bytes
    assert tail.status_code == 206 and tail.content == b"the end"
    assert tail.headers["content-range"] == f"bytes {size - 7}-{size - 1}/{size}"

    past = owner.get(url, headers={"Range": f"bytes={size - 3}-{size + 500}"}, timeout=30)  # clipped to the end
    assert past.status_code == 206 and past.content == VIDEO[-3:]

    for beyond in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        r = owner.get(url, headers={"Range": beyond}, timeout=30)
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}", beyond

    for ignored in ("bytes=5-2", "items=0-10", "bytes=0-1,5-6", "bytes=x-y", "bytes=-"):
        r = owner.get(url, headers={"Range": ignored}, timeout=30)  # not read: the whole file
        assert r.status_code == 200 and r.content == VIDEO, ignored

    stale = owner.get(url, headers={"Range": "bytes=0-9", "If-Range": '"another version"'}, timeout=30)
    assert stale.status_code == 200 and stale.content == VIDEO
    same = owner.get(url, headers={"Range": "bytes=0-9", "If-Range": whole.headers["etag"]}, timeout=30)
    assert same.status_code == 206 and same.content == VIDEO[:10]

    for stranger in (other, requests.Session()):  # someone else, and nobody: no range of it either
        for headers in ({}, {"Range": "bytes=0-9"}, {"Range": f"bytes={size}-"}):
            r = stranger.get(url, headers=headers, timeout=30)
            assert r.status_code == 404 and VIDEO[:10] not in r.content, headers


@pytest.mark.parametrize(("header", "size", "expected"), [
    ("bytes=0-0", 10, (0, 0)),
    ("bytes=9-", 10, (9, 9)),
    ("bytes=-20", 10, (0, 9)),  # a suffix longer than the file is all of it
    (" bytes = 2 - 4 ", 10, (2, 4)),
    (None, 10, None),
    ("bytes=3-1", 10, None),
])
def test_byte_range_reading(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected
