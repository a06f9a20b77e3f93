"""Inputs reach the node streamed: a large input is uploaded without being held whole in
the agent's memory, and the node gets exactly its bytes.

comfysim runs in a subprocess here, so ``tracemalloc`` (which counts the whole process)
measures only the agent's side of the upload: the blob store read, the multipart body and
the HTTP client.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.comfy import CHUNK, ComfyClient
from agent.uploads import Uploader
from backend.assets.blobs import LocalBlobStore
from backend.assets.s3_blobs import S3BlobStore
from backend.jobs.messages import Upload, upload_name
from backend.ports.blob_store import BlobStore

from .. import s3server
from ..comfysim.helpers import wait_http
from ..conftest import s3_settings
from ..services import free_port

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
#: Much bigger than a chunk, and still under ComfyUI's default body cap of 100 MB.
SIZE = 48 * MiB
#: What the agent may hold at once: a few chunks plus the HTTP client's buffers. Reading
#: the input whole (and requests' in-memory multipart copy of it) would need 2 * SIZE.
PEAK_CEILING = 8 * MiB


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A comfysim node in its own process: its URL and its data folder."""
    port, data = free_port(), tmp_path / "node"
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfysim", "--port", str(port), "--data-dir", str(data), "--max-upload-size", "100"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url, proc)
        yield url, data
    finally:
        proc.kill()
        proc.wait()


def large_input(store: BlobStore) -> str:
    """A ``SIZE`` input written in chunks (never whole in memory either); its asset id."""
    seed = os.urandom(CHUNK)
    chunks = (bytes([i % 251]) + seed[1:] for i in range(SIZE // CHUNK))
    return store.write(chunks, max_bytes=SIZE).sha256


def upload_measured(uploader: Uploader, upload: Upload) -> int:
    """Upload one input; the peak of memory allocated meanwhile, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        uploader.ensure([upload], job_id="j-large")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def on_node(data: Path, name: str) -> str:
    """The SHA-256 of the input file the node stored under ``name``."""
    digest = hashlib.sha256()
    with open(data / "input" / name, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def test_a_large_input_from_the_store_is_streamed_to_the_node(node: tuple[str, Path], tmp_path: Path) -> None:
    url, data = node
    store = LocalBlobStore(tmp_path / "assets", durable=False)
    asset_id = large_input(store)
    uploader = Uploader(ComfyClient(url, timeout=60), store, node_id="gpu-1")
    upload: Upload = {"asset_id": asset_id, "name": upload_name(asset_id), "kind": "image"}
    peak = upload_measured(uploader, upload)
    print(f"\nstore -> node: {SIZE / MiB:.0f} MiB input, peak {peak / MiB:.1f} MiB allocated")
    assert peak < PEAK_CEILING, f"{peak} bytes allocated at once for a {SIZE}-byte input"
    assert uploader.sent == 1
    assert on_node(data, upload["name"]) == asset_id


def test_a_large_input_from_a_presigned_url_is_streamed_to_the_node(
    node: tuple[str, Path], rgw: s3server.RGW, rgw_bucket: str, tmp_path: Path
) -> None:
    url, data = node
    settings = s3_settings(rgw, rgw_bucket, data_dir=tmp_path / "data")
    store = S3BlobStore(bucket=rgw_bucket, endpoint=rgw.endpoint, region="us-east-1", access_key=rgw.access_key,
                        secret_key=rgw.secret_key, path_style=True, prefix=settings.s3_prefix,
                        staging_dir=tmp_path / "staging")
    try:
        asset_id = large_input(store)
        presigned = store.presign_get(asset_id, expires=600)
        assert presigned is not None
        uploader = Uploader(ComfyClient(url, timeout=60), store, node_id="gpu-1")
        upload: Upload = {"asset_id": asset_id, "name": upload_name(asset_id), "kind": "image", "url": presigned}
        peak = upload_measured(uploader, upload)
    finally:
        store.close()
    print(f"\npresigned GET -> node: {SIZE / MiB:.0f} MiB input, peak {peak / MiB:.1f} MiB allocated")
    assert peak < PEAK_CEILING, f"{peak} bytes allocated at once for a {SIZE}-byte input"
    assert on_node(data, upload["name"]) == asset_id
