"""Putting a job's inputs on the node, each once: only missing inputs are uploaded, found
by content hash.

An input's node-side name is derived from its sha256 (``backend.jobs.messages.upload_name``),
so a name the node has always holds the right bytes and is never uploaded again. What
the node has is remembered here, but only as long as the websocket session lasts: a
reconnect may mean ComfyUI restarted with another disk, so the memory is dropped and
each name is re-checked with one cheap request before it is trusted again.

The bytes come from the asset store through the port, or, when the store is an object
store, from the presigned URL in the job message (so the agent needs no read credential
for inputs); an expired or failing URL falls back to the store. They are streamed, chunk
by chunk, from there into the multipart body of ``/upload/image``: an input is never held
whole in the agent's memory, however large.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import requests

from backend.errors import AssetStoreError, AssetStoreUnavailable, NotFound, StudioError
from backend.jobs.messages import Upload
from backend.ports.blob_store import BlobStore

from .comfy import CHUNK, ComfyClient
from .errors import UploadFailed

log = logging.getLogger("agent.uploads.Uploader")


class Uploader:
    def __init__(self, client: ComfyClient, blobs: BlobStore, *, node_id: str) -> None:
        self._client = client
        self._blobs = blobs
        self._node_id = node_id
        self._lock = threading.Lock()
        #: Node-side names known to exist on the node (as ``subfolder/file``).
        self._present: set[str] = set()
        #: Uploads actually sent since start (for operators and tests).
        self.sent = 0

    def forget(self) -> None:
        """Distrust everything remembered: called on each new websocket session."""
        with self._lock:
            self._present.clear()

    def ensure(self, uploads: list[Upload], *, job_id: str) -> dict[str, str]:
        """Make every input present on the node; returns renames (wanted name -> stored name).

        Images go first because a mask is merged onto its original image on the node.
        """
        renames: dict[str, str] = {}
        for upload in sorted(uploads, key=lambda u: u["kind"] != "image"):
            stored = self._ensure_one(upload, renames, job_id=job_id)
            if stored != upload["name"]:
                renames[upload["name"]] = stored
        return renames

    def _ensure_one(self, upload: Upload, renames: dict[str, str], *, job_id: str) -> str:
        name = upload["name"]
        subfolder, _, filename = name.rpartition("/")
        with self._lock:
            if name in self._present:
                return name
        if self._client.input_exists(subfolder, filename):
            with self._lock:
                self._present.add(name)
            return name
        mask_of = None
        if upload["kind"] == "mask":
            original = renames.get(upload.get("original", ""), upload.get("original", ""))
            if not original:
                raise UploadFailed(f"mask {name} of job {job_id} names no original image")
            orig_folder, _, orig_file = original.rpartition("/")
            mask_of = {"filename": orig_file, "subfolder": orig_folder, "type": "input"}
        with self._source(upload, job_id=job_id) as (chunks, size):
            stored_file = self._client.upload(chunks, size=size, filename=filename, subfolder=subfolder, mask_of=mask_of)
        stored = f"{subfolder}/{stored_file}" if subfolder else stored_file
        log.info("job_id=%s node_id=%s uploaded %s as %s", job_id, self._node_id, upload["kind"], stored)
        with self._lock:
            self.sent += 1
            self._present.add(stored)
        return stored

    @contextmanager
    def _source(self, upload: Upload, *, job_id: str) -> Iterator[tuple[Iterator[bytes], int | None]]:
        """The input's bytes as a stream of chunks, and their size when known. An object
        store that does not answer is ``AssetStoreUnavailable`` (the job goes back to the
        queue); a URL refused (expired) falls back to the store."""
        asset_id = upload["asset_id"]
        url = upload.get("url")
        if url:
            try:
                response = requests.get(url, timeout=30, stream=True)
            except requests.RequestException as exc:
                raise AssetStoreUnavailable(f"the object store did not answer ({type(exc).__name__})") from None
            with response:
                if response.status_code == 200:
                    # A length of encoded bytes is not the length of what iter_content yields.
                    length = None if response.headers.get("Content-Encoding") else response.headers.get("Content-Length")
                    yield _downloaded(response), int(length) if length and length.isdigit() else None
                    return
                if response.status_code >= 500:
                    raise AssetStoreUnavailable(f"the object store answered {response.status_code}")
            log.warning("job_id=%s node_id=%s presigned GET of %s answered %s; reading the store",
                        job_id, self._node_id, asset_id, response.status_code)
        try:
            size = self._blobs.size(asset_id)
            fh = self._blobs.open(asset_id)
        except NotFound:
            raise UploadFailed(f"input {asset_id} of job {job_id} is not in the asset store") from None
        except AssetStoreUnavailable:
            raise
        except AssetStoreError as exc:  # e.g. a write-only credential and an expired URL
            raise UploadFailed(f"input {asset_id} of job {job_id} cannot be read: {exc}") from None
        with fh:
            yield _read(fh, asset_id), size


def _downloaded(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(CHUNK)
    except requests.RequestException as exc:
        # Not a requests error once inside the upload's body: ComfyUI is not to blame.
        raise AssetStoreUnavailable(f"the object store broke off the input ({type(exc).__name__})") from None


def _read(fh: BinaryIO, asset_id: str) -> Iterator[bytes]:
    while True:
        try:
            chunk = fh.read(CHUNK)
        except StudioError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store's stream (file, botocore): retry later
            raise AssetStoreUnavailable(f"reading input {asset_id} from the asset store broke off ({type(exc).__name__})") from None
        if not chunk:
            return
        yield chunk


def rename_inputs(prompt: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    """A copy of ``prompt`` whose literal inputs naming a renamed file use the stored name.

    ComfyUI keeps both files when a different one already has the name (``x (1).png``);
    the prompt must then point at what was really stored.
    """
    if not renames:
        return prompt
    return {
        node_id: {
            **node,
            "inputs": {
                key: renames.get(value, value) if isinstance(value, str) else value
                for key, value in node.get("inputs", {}).items()
            },
        }
        for node_id, node in prompt.items()
    }
