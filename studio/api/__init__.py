"""The integrators' REST API (docs/api.md), a FastAPI app mounted at ``/api`` of the
studio: ``/api/v1/...`` endpoints, the OpenAPI document at ``/api/openapi.json`` and
Swagger UI at ``/api/docs``, whose files (Swagger UI 5, which reads OpenAPI 3.1) come
with the ``fastapi-offline`` package: nothing is loaded from a CDN. It imports the backend and the studio's context only;
every rule is the backend's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..context import Studio
from . import admin, errors, routes

API_PATH = "/api"
SWAGGER_DIR = Path(fastapi_offline.__file__).parent / "static"

DESCRIPTION = """JSON API of AIGC Studio. Authenticate with a personal access token
(`Authorization: Bearer sk_…`) made on the Account page or with
`python -m backend tokens create USER`. Errors have one shape:
`{"error": {"code", "message", "message_zh", "field"}}`. See docs/api.md."""


def build_api(studio: Studio) -> FastAPI:
    """The API app; mount it at :data:`API_PATH`."""
    api = FastAPI(title="AIGC Studio API", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    api.state.studio = studio
    errors.install(api)

    @api.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Before the multipart parser spools a body of any size to disk.
        if request.method == "POST":
            limit = studio.backend.settings.max_upload_bytes + routes.MULTIPART_SLACK
            length = request.headers.get("content-length")
            if length is None and request.headers.get("transfer-encoding"):
                return errors.ApiError(411, "length_required", "Send a Content-Length with the request.",
                                       "请求须带 Content-Length。").response()
            if length is not None and (not length.isdigit() or int(length) > limit):
                return errors.ApiError(413, "too_large", f"The request is larger than the {limit} byte limit.",
                                       f"请求超过 {limit} 字节的上限。", field="file").response()
        return await call_next(request)

    api.include_router(routes.router)
    api.include_router(admin.router)
    api.mount("/docs-assets", StaticFiles(directory=SWAGGER_DIR), name="swagger-assets")

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=API_PATH + "/openapi.json", title="AIGC Studio API",
                                   swagger_js_url=API_PATH + "/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url=API_PATH + "/docs-assets/swagger-ui.css",
                                   swagger_favicon_url=API_PATH + "/docs-assets/favicon.png")

    return api
