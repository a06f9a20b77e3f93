"""The access-checked file route: outputs, uploads and previews, only to their owner.

Nothing a user produced is ever handed to Gradio as a path (Gradio's cache can be
fetched by anyone who has the URL). Pages link to ``/files/<sha256>``; this route
checks the session's user against the asset's owners (admins may read everything), and
answers "not found" alike for missing and foreign files so ids cannot be probed.
Previews have no owner row; the feed remembers whose event named each one.

It answers single byte ranges (``Range: bytes=...``, 206 or 416): a video player seeks
with them, and Safari plays no video from a server that ignores them.
"""

from __future__ import annotations

import re
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
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
          "FLAC": "audio/flac", "WAV": "audio/wav", "MP3": "audio/mpeg", "MP4": "video/mp4", "WEBM": "video/webm"}


def file_url(asset_id: str, *, download: bool = False) -> str:
    return f"{FILE_ROUTE}/{asset_id}" + ("?download=1" if download else "")


def sniff_media_type(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class Unsatisfiable(Exception):
    """A well-formed byte range that lies wholly outside the file (HTTP 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) that a ``Range`` header asks of a file of ``size``.

    ``None`` means the whole file: no header, or one this route does not read — several
    ranges, another unit, a malformed one (RFC 9110 lets a server ignore those). Raises
    :class:`Unsatisfiable` for a range outside the file.
    """
    match = _RANGE.fullmatch((header or "").replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # a suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - int(last)), size - 1
    if last and int(last) < int(first):
        return None  # "5-2" is malformed, not unsatisfiable
    if int(first) >= size:
        raise Unsatisfiable
    return int(first), min(int(last), size - 1) if last else size - 1


def stream_chunks(fh: BinaryIO, head: bytes = b"", remaining: int | None = None) -> Iterator[bytes]:
    """The bytes of ``fh`` after ``head`` (already read from it), ``remaining`` at most; closes it."""
    try:
        if head:
            head = head if remaining is None else head[:remaining]
            if remaining is not None:
                remaining -= len(head)
            yield head
        while remaining is None or remaining > 0:
            chunk = fh.read(256 * 1024 if remaining is None else min(256 * 1024, remaining))
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
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
                name, media_type = record.name, MEDIA_TYPES.get(record.format.upper(), "")
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
            media_type = sniff_media_type(head)
        filename = name or f"{asset_id[:16]}.{media_type.rsplit('/', 1)[-1]}"
        disposition = "attachment" if download else "inline"
        headers = {
            # Content-addressed: the bytes behind a URL never change, but they are private.
            "Cache-Control": "private, max-age=86400",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            "Accept-Ranges": "bytes",
            "ETag": f'"{asset_id}"',
        }
        size = blobs.size(asset_id)
        # If-Range names the version the client holds; content-addressed, it is the id.
        honour = request.headers.get("if-range") in (None, headers["ETag"])
        try:
            wanted = byte_range(request.headers.get("range"), size) if honour else None
        except Unsatisfiable:
            fh.close()
            return PlainTextResponse("Range not satisfiable", status_code=416,
                                     headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
        if wanted is None:
            headers["Content-Length"] = str(size)
            return StreamingResponse(stream_chunks(fh, head), media_type=media_type, headers=headers)
        first, last = wanted
        head = _skip(fh, head, first)
        headers.update({"Content-Range": f"bytes {first}-{last}/{size}", "Content-Length": str(last - first + 1)})
        return StreamingResponse(stream_chunks(fh, head, last - first + 1), status_code=206, media_type=media_type,
                                 headers=headers)


def _skip(fh: BinaryIO, head: bytes, first: int) -> bytes:
    """Move to byte ``first`` of a file of which ``head`` was read; what is left of ``head``.

    A local file seeks; an object store's stream cannot, so the bytes before are read and
    dropped (a player's seek into a large video costs that read; a ranged GET would not).
    """
    if first <= len(head):
        return head[first:]
    if fh.seekable():
        fh.seek(first)
        return b""
    left = first - len(head)
    while left > 0:
        chunk = fh.read(min(256 * 1024, left))
        if not chunk:
            break
        left -= len(chunk)
    return b""
