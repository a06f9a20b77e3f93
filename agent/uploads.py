"""Putting a job's inputs on the node, each once (design §2: "uploads missing inputs by
content hash").

An input's node-side name is derived from its sha256 (``backend.jobs.messages.upload_name``),
so a name the node has always holds the right bytes and is never uploaded again. What
the node has is remembered here, but only as long as the websocket session lasts: a
reconnect may mean ComfyUI restarted with another disk, so the memory is dropped and
each name is re-checked with one cheap request before it is trusted again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from backend.blobs import BlobStore
from backend.errors import NotFound
from backend.jobs.messages import Upload

from .comfy import ComfyClient
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
        try:
            with self._blobs.open(upload["asset"]) as fh:
                data = fh.read()
        except NotFound:
            raise UploadFailed(f"input {upload['asset']} of job {job_id} is not in the asset store") from None
        mask_of = None
        if upload["kind"] == "mask":
            original = renames.get(upload.get("original", ""), upload.get("original", ""))
            if not original:
                raise UploadFailed(f"mask {name} of job {job_id} names no original image")
            orig_folder, _, orig_file = original.rpartition("/")
            mask_of = {"filename": orig_file, "subfolder": orig_folder, "type": "input"}
        stored_file = self._client.upload(data, filename=filename, subfolder=subfolder, mask_of=mask_of)
        stored = f"{subfolder}/{stored_file}" if subfolder else stored_file
        log.info("job_id=%s node_id=%s uploaded %s as %s", job_id, self._node_id, upload["kind"], stored)
        with self._lock:
            self.sent += 1
            self._present.add(stored)
        return stored


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
