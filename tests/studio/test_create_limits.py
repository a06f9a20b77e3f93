"""The Create page's own handlers against the per-user limits, without a browser: the
inpainting form is built and wired as the page's render builds it, and its Create click
is called with the values a browser would send (a picture already stored, a mask drawn
on the canvas as this session's uploads)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from backend import assets
from backend.jobs import limits
from backend.runtime import Backend
from studio.auth import SESSION_COOKIE
from studio.pages import create
from studio.uploads import Uploads
from tests.backend.helpers import make_user

from .helpers import CLIENT_ADDRESS, studio_of

TOKEN = "a session token of the painter"


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _session_file(uploads: Uploads, data: bytes, name: str) -> str:
    """``data`` as an upload of the session ``TOKEN``, where the upload route puts it."""
    folder = uploads.folder(TOKEN) / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return str(folder / name)


def test_a_drawn_mask_counts_against_the_storage_quota(backend: Backend, tmp_path: Path) -> None:
    studio = studio_of(backend)
    studio.uploads = Uploads(max_bytes=backend.settings.max_upload_bytes, root=tmp_path / "gradio")
    settings, db = backend.settings, backend.db
    painter = make_user(db, "painter", credits=1000)
    side = 590  # noise: a PNG a few kB short of the 1 MiB quota
    picture_bytes = _png(Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)))
    picture = assets.store_upload(db, backend.blobs, painter.id, [picture_bytes], name="in.png",
                                  max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    # Speckles all over: a mask PNG larger than the few kB the quota has left.
    strokes = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    strokes.putalpha(Image.frombytes("L", (side, side), os.urandom(side * side)).point(lambda v: 255 if v > 127 else 0))
    limits.set_override(db, painter.id, "storage_quota_mb", 1)

    spec = backend.library.get("inpaint-sd15")
    with gr.Blocks() as demo:
        form = create._build_form(studio, spec, "en", None)
        key, job, watch = gr.State(None), gr.State(None), gr.State(None)
        create._wire_form(studio, form, key, job, watch, gr.HTML(), gr.Button())
    click = next(d.fn for d in demo.fns.values() if getattr(d.fn, "__name__", "") == "create")
    data: dict[Any, Any] = {c: getattr(c, "value", None) for c in form.value_inputs()}
    data[key] = None
    data[form.stored["image"]] = picture.id
    data[form.fields["prompt"]] = "a red door"
    data[form.files["mask"]] = {"background": _session_file(studio.uploads, picture_bytes, "in.png"),
                                "layers": [_session_file(studio.uploads, _png(strokes), "layer.png")],
                                "composite": None}
    request = gr.Request(username="painter", client={"host": CLIENT_ADDRESS}, headers={}, query_params={},
                         cookies={SESSION_COOKIE: TOKEN})
    stored_before = limits.usage(db, painter.id).storage_bytes
    assert stored_before < 1024 * 1024

    answer = click(data, request)
    assert "storage_quota_mb" in answer[form.notice], answer[form.notice]
    assert limits.usage(db, painter.id).storage_bytes == stored_before, "the refused mask was not stored"
    assert not answer.get(job), "no job was made"

    limits.set_override(db, painter.id, "storage_quota_mb", None)  # the creators' default: no limit
    answer = click(data, request)
    assert "storage_quota_mb" not in answer[form.notice]
    assert limits.usage(db, painter.id).storage_bytes > stored_before, "the mask is stored: an upload of the painter"
