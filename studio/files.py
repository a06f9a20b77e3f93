"""The access-checked file route: outputs, uploads and previews, only to their owner.

Nothing a user produced is ever handed to Gradio as a path (Gradio's cache can be
fetched by anyone who has the URL). Pages link to ``/files/<sha256>``; this route
checks the session's user against the asset's owners (admins may read everything), and
answers "not found" alike for missing and foreign files so ids cannot be probed.
Previews have no owner row; the feed remembers whose event named each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

import fastapi
from fastapi.responses import PlainTextResponse, StreamingResponse

from backend import assets
from backend.errors import NotFound
from backend.ports.blob_store import is_sha256

from .auth import SESSION_COOKIE
from .context import Studio

FILE_ROUTE = "/files"
_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
          "FLAC": "audio/flac", "WAV": "audio/wav", "MP3": "audio/mpeg", "MP4": "video/mp4", "WEBM": "video/webm"}


def file_url(asset_id: str, *, download: bool = False) -> str:
    return f"{FILE_ROUTE}/{asset_id}" + ("?download=1" if download else "")


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _chunks(fh: BinaryIO, head: bytes = b"") -> Iterator[bytes]:
    try:
        if head:
            yield head
        while chunk := fh.read(256 * 1024):
            yield chunk
    finally:
        fh.close()


def add_file_routes(app: fastapi.FastAPI, studio: Studio) -> None:
    db, blobs = studio.backend.db, studio.backend.blobs

    @app.get(FILE_ROUTE + "/{asset_id}")
    def get_file(asset_id: str, request: fastapi.Request, download: int = 0) -> fastapi.Response:
        user = studio.sessions.resolve(request.cookies.get(SESSION_COOKIE))
        missing = PlainTextResponse("Not found", status_code=404)
        if user is None or not is_sha256(asset_id):
            return missing
        name, media_type = "", ""
        try:
            if assets.user_can_read(db, user.id, asset_id, is_admin=user.is_admin):
                record, fh = assets.open_for_user(db, blobs, user.id, asset_id, is_admin=user.is_admin)
                name, media_type = record.name, _TYPES.get(record.format.upper(), "")
            elif studio.feed.preview_owner(asset_id) == user.id or (
                user.is_admin and studio.feed.preview_owner(asset_id) is not None
            ):
                fh = blobs.open(asset_id)
            else:
                return missing
        except NotFound:
            return missing
        head = b""
        if not media_type:
            head = fh.read(16)  # an object store's stream cannot seek back
            media_type = _sniff(head)
        filename = name or f"{asset_id[:16]}.{media_type.rsplit('/', 1)[-1]}"
        disposition = "attachment" if download else "inline"
        headers = {
            # Content-addressed: the bytes behind a URL never change, but they are private.
            "Cache-Control": "private, max-age=86400",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
        }
        return StreamingResponse(_chunks(fh, head), media_type=media_type, headers=headers)
