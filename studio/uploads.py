"""Uploads: one folder per sign-in session, and the only files a browser may name.

Gradio keeps every upload in one folder shared by all users and, mounted in our app,
hands any path a request names to the event handlers (see :func:`studio.app.create_app`
for the guard Gradio's ``launch()`` would have set up). This module narrows that to
"files this session uploaded":

- ``POST /studio/gradio_api/upload`` is ours, registered ahead of Gradio's. It needs a
  session, takes one file within the upload limit (Gradio's own multipart parser stops
  reading at the limit), keeps at most ``SESSION_QUOTA_FILES`` uploads' worth of bytes
  per session, and stores the file as ``<upload folder>/sessions/<key>/<sha>/<name>``,
  ``<key>`` derived from the session token.
- ``GET /studio/gradio_api/file=<path>`` is ours too: only a file in the requester's
  own session folder, inline if it is a PNG, JPEG or WEBP and as a download otherwise.
  Anything else — another user's upload, Gradio's cache, a server file, a URL Gradio
  would fetch — is "not found".
- :meth:`Uploads.path` is the handlers' own check (defence in depth behind Gradio's): a
  path that is not a regular file in this session's folder is refused before it is
  opened.
- :meth:`Uploads.sweep` deletes uploads older than ``MAX_AGE_SECONDS`` (the app runs
  it periodically); Gradio's ``delete_cache`` only knows the files an event touched.

Several studio replicas behind a load balancer need sticky sessions for Gradio anyway;
with a shared ``GRADIO_TEMP_DIR`` they also share these folders (the key depends only on
the session token).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import fastapi
import gradio as gr
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from gradio.route_utils import upload_fn
from gradio.routes import file_upload_statuses
from gradio.utils import get_upload_folder
from starlette.formparsers import MultiPartException

from backend.accounts.sessions import Sessions
from backend.blobs import check_size
from backend.errors import InvalidUpload

from .auth import SESSION_COOKIE

log = logging.getLogger(__name__)

GRADIO_API = "/studio/gradio_api"
#: Uploads older than this are deleted (the form stores a picture as an asset at once;
#: the file only backs the preview and the mask canvas while the page is open).
MAX_AGE_SECONDS = 3600
#: A session's folder may hold this many maximum-size uploads at once.
SESSION_QUOTA_FILES = 20
#: Multipart framing around the one file of an upload request.
MULTIPART_SLACK = 64 * 1024
_INLINE = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}



def not_uploaded() -> InvalidUpload:
    return InvalidUpload(
        "This file was not uploaded in your current session. Please upload it again.",
        zh="该文件不是在您当前的会话中上传的，请重新上传。",
    )


def session_token(request: gr.Request | fastapi.Request | None) -> str | None:
    """The session cookie of a Gradio event's request or a plain request."""
    cookies = getattr(request, "cookies", None) or {}
    return cookies.get(SESSION_COOKIE)


class Uploads:
    """The per-session upload folders under Gradio's upload folder."""

    def __init__(self, *, max_bytes: int, root: Path | None = None) -> None:
        self.max_bytes = max_bytes
        self.root = (Path(root) if root is not None else Path(get_upload_folder())).resolve() / "sessions"

    def folder(self, token: str | None) -> Path:
        if not token:
            raise not_uploaded()
        key = hashlib.sha256(b"studio-uploads\x00" + token.encode()).hexdigest()[:32]
        return self.root / key

    def path(self, path: str | os.PathLike[str] | None, token: str | None) -> Path:
        """``path`` if it is a regular file this session uploaded; :func:`not_uploaded` otherwise."""
        folder = self.folder(token)
        if not path:
            raise not_uploaded()
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            resolved = None
        if resolved is None or not resolved.is_relative_to(folder) or not resolved.is_file():
            log.warning("refused a file path that is not an upload of this session: %r", str(path)[:300])
            raise not_uploaded()
        return resolved

    def read(self, path: str | os.PathLike[str] | None, token: str | None) -> bytes:
        """The bytes of an upload of this session, refused unread above the upload limit."""
        resolved = self.path(path, token)
        check_size(resolved.stat().st_size, max_bytes=self.max_bytes)
        return resolved.read_bytes()

    def usage(self, folder: Path) -> int:
        total = 0
        for base, _dirs, files in os.walk(folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(base, name)).st_size
        return total

    def sweep(self, max_age: float = MAX_AGE_SECONDS) -> int:
        """Delete uploads older than ``max_age`` seconds (and emptied folders); how many."""
        if not self.root.is_dir():
            return 0
        cutoff, removed = time.time() - max_age, 0
        for base, dirs, files in os.walk(self.root, topdown=False):
            for name in files:
                path = os.path.join(base, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
            if base != str(self.root):
                with contextlib.suppress(OSError):
                    os.rmdir(base)  # only succeeds once empty
        return removed


def add_upload_routes(app: fastapi.FastAPI, uploads: Uploads, sessions: Sessions) -> None:
    """The upload and file routes; call before Gradio is mounted so that they win."""

    async def signed_in(request: fastapi.Request) -> str | None:
        token = request.cookies.get(SESSION_COOKIE)
        user = await run_in_threadpool(sessions.resolve, token)
        return token if user is not None else None

    @app.post(GRADIO_API + "/upload")
    async def upload(request: fastapi.Request, upload_id: str | None = None) -> fastapi.Response:
        token = await signed_in(request)
        if token is None:
            return PlainTextResponse("Not signed in", status_code=401)
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            return PlainTextResponse("Uploads need a Content-Length", status_code=411)
        if int(length) > uploads.max_bytes + MULTIPART_SLACK:
            return PlainTextResponse(f"File size exceeded maximum allowed size of {uploads.max_bytes} bytes",
                                     status_code=413)
        folder = uploads.folder(token)
        await run_in_threadpool(folder.mkdir, parents=True, exist_ok=True)
        if await run_in_threadpool(uploads.usage, folder) + int(length) > SESSION_QUOTA_FILES * uploads.max_bytes:
            return PlainTextResponse("Too many uploads in this session; wait a while and try again",
                                     status_code=429)
        try:
            paths, _, _ = await upload_fn(request, folder, uploads.max_bytes, upload_id, force_move=True,
                                          upload_progress=file_upload_statuses if upload_id else None)
        except MultiPartException as exc:
            code = 413 if "maximum allowed size" in exc.message else 400
            return PlainTextResponse(exc.message, status_code=code)
        if len(paths) != 1:
            for path in paths:
                await run_in_threadpool(shutil.rmtree, Path(path).parent, True)
            return PlainTextResponse("Upload one file at a time", status_code=400)
        return JSONResponse(paths)

    @app.api_route(GRADIO_API + "/file={path:path}", methods=["GET", "HEAD"])
    async def file(path: str, request: fastapi.Request) -> fastapi.Response:
        token = await signed_in(request)
        try:
            resolved = uploads.path(path, token) if token else None
        except InvalidUpload:
            resolved = None
        if resolved is None:
            return PlainTextResponse("Not found", status_code=404)
        with open(resolved, "rb") as fh:
            head = fh.read(16)
        media = next((t for magic, t in _INLINE.items() if head.startswith(magic)), None)
        if media is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            media = "image/webp"
        headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
                   "Cache-Control": "private, max-age=3600"}
        return FileResponse(resolved, media_type=media or "application/octet-stream", headers=headers,
                            content_disposition_type="inline" if media else "attachment", filename=resolved.name)
