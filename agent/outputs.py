"""Bringing ComfyUI's files into the asset store: outputs through /view, previews from frames.

Files stream from ComfyUI into the content-addressed store through the blob-store port
(a directory or an S3 bucket): staged locally (hashed on the way, capped in size), images
measured there with the backend's own checks, so the studio learns their format and size
without decoding them again, then committed under their hash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from backend.ports.blob_store import BlobStore
from backend.errors import InvalidUpload
from backend.assets.images import inspect_image_file

from .comfy import ComfyClient
from .config import AgentConfig
from .translate import output_kind

log = logging.getLogger("agent.outputs.OutputStore")


@dataclass(frozen=True)
class StoredFile:
    asset_id: str
    size: int
    kind: str  # image, video, audio or file
    format: str | None
    width: int | None
    height: int | None

    def fields(self) -> dict[str, Any]:
        """The ``output`` lifecycle fields this file provides."""
        return {
            "asset_id": self.asset_id,
            "kind": self.kind,
            "format": self.format,
            "size": self.size,
            "width": self.width,
            "height": self.height,
        }


class OutputStore:
    def __init__(self, client: ComfyClient, blobs: BlobStore, config: AgentConfig) -> None:
        self._client = client
        self._blobs = blobs
        self._config = config

    def fetch(self, ref: dict[str, Any], *, job_id: str) -> StoredFile:
        """Download one output file ref into the store."""
        kind = output_kind(ref["filename"])
        fmt = ref["filename"].rsplit(".", 1)[-1].upper() if "." in ref["filename"] else None
        width = height = None
        with self._blobs.stage(self._client.download(ref), max_bytes=self._config.max_output_bytes) as staged:
            if kind == "image":
                try:
                    info = inspect_image_file(
                        staged.path, max_bytes=self._config.max_output_bytes, max_pixels=self._config.max_output_pixels
                    )
                    fmt, width, height = info.format, info.width, info.height
                except InvalidUpload as exc:
                    # Still the job's result (ComfyUI made it); the studio just gets no size.
                    log.warning("job_id=%s output %s not measurable: %s", job_id, ref["filename"], exc)
            blob = staged.commit()
        return StoredFile(blob.sha256, blob.size, kind, fmt, width, height)

    def store_preview(self, image: bytes) -> str:
        """Store a preview frame's image; its asset id."""
        return self._blobs.write_bytes(image, max_bytes=self._config.max_output_bytes).sha256
