"""The Create page's file inputs: Gradio's Image and ImageEditor without any decoding.

``gr.Image`` opens an upload with Pillow while preprocessing it (and with its default
``image_mode="RGB"`` converts it: a 20 KB 1-bit PNG of 13000×13000 pixels cost 0.9 GB
there, and 16-bit pictures were clipped to white); ``gr.ImageEditor`` decodes its
background, layers and composite the same way. Both happen before any handler of ours
runs, so no check of ours could come first.

These subclasses are the same components in the browser (same Svelte component, same
value format), but their preprocessing only says where the bytes are: a path in
Gradio's upload folder. The handler then checks that the path is an upload of the
session (:class:`studio.uploads.Uploads`) and the bytes with :mod:`backend.assets.images`
before anything decodes them. Data URLs, which Gradio would decode itself, are ignored.
"""

from __future__ import annotations

from typing import Any, TypedDict

import gradio as gr
from gradio.components.base import server
from gradio.components.image_editor import AcceptBlobs, EditorData
from gradio.data_classes import ImageData


class ImageUpload(gr.Image):
    """``gr.Image`` whose value reaches the handler as the uploaded file's path, unopened."""

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload: ImageData | None) -> str | None:  # type: ignore[override]
        return payload.path if payload is not None else None


class MaskValue(TypedDict):
    """A mask canvas's value as its handler gets it: paths of uploaded files, unopened."""

    background: str | None
    layers: list[str]


class MaskCanvas(gr.ImageEditor):
    """``gr.ImageEditor`` whose value reaches the handler as paths, unopened.

    The canvas uploads its background and painted layers through the upload route; the
    layers are what :func:`studio.widgets.mask_png` turns into a mask, after checking them.
    """

    def get_block_name(self) -> str:
        return "imageeditor"

    def preprocess(self, payload: EditorData | None) -> MaskValue | None:  # type: ignore[override]
        # ``payload.id`` names bytes sent to ``accept_blobs``, which this canvas never keeps.
        if payload is None:
            return None
        background = payload.background.path if payload.background is not None else None
        return {"background": background, "layers": [layer.path for layer in payload.layers if layer.path]}

    @server
    def accept_blobs(self, data: AcceptBlobs) -> None:
        """Ignored: Gradio's way of sending canvas layers as in-memory blobs (its route is
        closed too, see :mod:`studio.guard`); the canvas sends uploaded files instead."""
        del data


def mask_value(value: Any) -> MaskValue:
    """A canvas value as :class:`MaskValue` (empty when there is none)."""
    if not isinstance(value, dict):
        return {"background": None, "layers": []}
    layers = [layer for layer in value.get("layers") or [] if isinstance(layer, str) and layer]
    background = value.get("background")
    return {"background": background if isinstance(background, str) else None, "layers": layers}
