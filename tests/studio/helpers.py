"""Driving the studio's pages without a browser: the real Blocks and their handlers,
called with a Gradio request for a signed-in user, as the Gradio route calls them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from backend.runtime import Backend
from studio.app import build_blocks
from backend.accounts.sessions import Sessions
from studio.context import Studio
from studio.feed import Feed
from studio.i18n import build_i18n
from studio.uploads import Uploads
from tests.backend.helpers import CHEAP_HASHER


def studio_of(backend: Backend) -> Studio:
    return Studio(backend=backend, feed=Feed(backend.bus), sessions=Sessions(backend.db), wake=lambda: None,
                  hasher=CHEAP_HASHER, i18n=build_i18n(backend.library),
                  uploads=Uploads(max_bytes=backend.settings.max_upload_bytes))


#: The address the page handlers see (the per-address limits key on it).
CLIENT_ADDRESS = "203.0.113.7"


class Pages:
    """The studio's public page handlers by API name, called as ``user``."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.blocks = build_blocks(studio)

    def handler(self, api_name: str) -> Callable[..., Any]:
        return next(d.fn for d in self.blocks.fns.values() if d.api_name == api_name)

    def call(self, api_name: str, user: str, *args: Any) -> Any:
        request = gr.Request(username=user, client={"host": CLIENT_ADDRESS}, headers={}, query_params={})
        return self.handler(api_name)(*args, request=request)
