"""The studio web app: FastAPI owns sign-in, sessions and files; Gradio is mounted under
``/studio`` with our session as its ``auth_dependency``.

Routes:

- ``/login``, ``/signup``, ``/logout``, ``/lang/{en|zh}``: plain pages (:mod:`.pages.signin`)
- ``/studio/`` (Create), ``/studio/history``, ``/studio/account``, ``/studio/admin``: Gradio
- ``/files/{sha256}``: outputs, uploads and previews, to their owner only (:mod:`.files`)
- ``/static/*`` (logo, css) and ``/examples/{workflow}.png`` (workflow example images)
- ``/metrics``: Prometheus text (:func:`backend.metrics.render`) to loopback clients, or
  to any client with ``Authorization: Bearer <metrics_token>`` when that setting is set

While the database (or another service) is away, a request answers 503 "try again in a
moment" with ``Retry-After`` (:class:`_TryAgainLater`) instead of an error page, and a
Gradio action shows the same sentence; everything works again once it is back.

The entry point builds the :class:`~backend.runtime.Backend` and a running worker, then
serves :func:`create_app` with uvicorn; the user-event :class:`~studio.feed.Feed` starts
and stops with the app's lifespan.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fastapi
import gradio as gr
from argon2 import PasswordHasher
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from backend import metrics
from backend.errors import Unavailable
from backend.passwords import DEFAULT_HASHER
from backend.runtime import Backend

from .auth import SESSION_COOKIE, Sessions
from .context import Studio
from .feed import Feed
from .files import add_file_routes
from .i18n import LANG_HEAD_SCRIPT, build_i18n
from .pages import account, admin, create, history
from .pages.signin import STUDIO_PATH, add_signin_routes

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
PAGE_PATHS = frozenset({STUDIO_PATH, STUDIO_PATH + "/", *(f"{STUDIO_PATH}/{p}" for p in ("history", "account", "admin"))})


def build_blocks(studio: Studio) -> gr.Blocks:
    """The Gradio app: Create on the main page, one route per other page."""
    with gr.Blocks(title="AIGC Studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        create.build(studio, demo)
    with demo.route("History", "/history"):
        history.build(studio, demo)
    with demo.route("Account", "/account"):
        account.build(studio, demo)
    with demo.route("Admin", "/admin"):
        admin.build(studio, demo)
    # Each browser watching a job holds one worker of Gradio's queue (and one thread) for
    # as long as it watches; Gradio's default of 40 made the 41st watcher wait for a
    # free one (benchmark 5). The queue reads this when it is created.
    demo.max_threads = MAX_WATCHERS
    # Price previews and admin tables are quick; progress handlers opt out of the limit.
    demo.queue(default_concurrency_limit=16)
    return demo


METRICS_TYPE = "text/plain; version=0.0.4"
#: Sessions that can watch a job at once per studio process (threads mostly waiting).
MAX_WATCHERS = 1000


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_allowed(request: fastapi.Request, token: str) -> bool:
    """Loopback clients always; others only with the configured bearer token.

    Behind a reverse proxy on the same host every client looks like loopback, so such a
    proxy must not forward ``/metrics`` (or the deployment sets a token and blocks it).
    """
    if _loopback(request.client.host if request.client else None):
        return True
    if not token:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


class _SignInRedirect:
    """Sends a browser without a session from a studio page to the sign-in page (Gradio
    itself would answer 401 JSON). Pure ASGI, so Gradio's event streams pass untouched."""

    def __init__(self, app: Any, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") in PAGE_PATHS:
            cookies = SimpleCookie()
            for name, value in scope.get("headers", []):
                if name == b"cookie":
                    cookies.load(value.decode("latin-1"))
            token = cookies[SESSION_COOKIE].value if SESSION_COOKIE in cookies else None
            if self.sessions.resolve(token) is None:
                target = scope["path"] + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TryAgainLater:
    """Answers 503 with ``Retry-After`` when a request fails because a service is away
    (``backend.errors.Unavailable``: the database restarting, Redis or RabbitMQ gone),
    instead of a 500 and a traceback. Pure ASGI and outermost, so it also covers the
    session check of :class:`_SignInRedirect`."""

    RETRY_AFTER_SECONDS = 5

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Unavailable as exc:
            if started:
                raise
            log.warning("%s %s answered 503: %s", scope.get("method"), scope.get("path"), exc)
            response = PlainTextResponse(f"{exc.message}\n{exc.zh}\n", status_code=503,
                                         headers={"Retry-After": str(self.RETRY_AFTER_SECONDS), "Cache-Control": "no-store"})
            await response(scope, receive, send)


def create_app(
    backend: Backend,
    *,
    wake: Callable[[], None],
    lang_default: str = "en",
    password_hasher: PasswordHasher = DEFAULT_HASHER,
    secure_cookies: bool = False,
) -> fastapi.FastAPI:
    """The studio as an ASGI app over a built ``backend``.

    ``wake`` asks the dispatcher for a pass (pass ``Worker.wake``). ``lang_default`` is
    the language when a browser sends no preference. ``secure_cookies`` marks the
    session cookie Secure (set it behind HTTPS). The app's ``state.studio`` holds the
    :class:`Studio` (backend, feed, sessions) for the entry point and tests.
    """
    feed = Feed(backend.bus)
    sessions = Sessions(backend.db)
    studio = Studio(backend=backend, feed=feed, sessions=sessions, wake=wake, hasher=password_hasher,
                    i18n=build_i18n(backend.library))

    @contextlib.asynccontextmanager
    async def lifespan(_app: fastapi.FastAPI) -> AsyncIterator[None]:
        feed.start()
        try:
            purged = sessions.purge_expired()
        except Unavailable as exc:  # the next start purges them; the studio serves meanwhile
            log.warning("expired sessions not purged now: %s", exc)
            purged = 0
        log.info("studio started (%d expired sessions removed)", purged)
        try:
            yield
        finally:
            feed.stop()

    app = fastapi.FastAPI(title="AIGC Studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    add_signin_routes(app, studio, lang_default=lang_default, secure_cookies=secure_cookies)
    add_file_routes(app, studio)
    app.mount("/static", StaticFiles(directory=ASSETS_DIR), name="static")

    @app.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse(STUDIO_PATH + "/", status_code=303)

    @app.get("/favicon.ico")
    def favicon() -> FileResponse:
        return FileResponse(ASSETS_DIR / "logo.svg", media_type="image/svg+xml")

    @app.get("/examples/{name}.png")
    def example(name: str) -> fastapi.Response:
        spec = backend.library.get(name) if name in backend.library else None
        if spec is None or spec.example is None or not spec.example.is_file():
            return PlainTextResponse("Not found", status_code=404)
        return FileResponse(spec.example, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/metrics")
    def prometheus(request: fastapi.Request) -> fastapi.Response:
        if not metrics_allowed(request, backend.settings.metrics_token):
            return PlainTextResponse("Forbidden", status_code=403)
        return PlainTextResponse(metrics.render(backend), media_type=METRICS_TYPE,
                                 headers={"Cache-Control": "no-store"})

    def session_user(request: fastapi.Request) -> str | None:
        try:
            user = sessions.resolve(request.cookies.get(SESSION_COOKIE))
        except Unavailable as exc:  # inside Gradio's own app, beyond _TryAgainLater's reach
            raise fastapi.HTTPException(503, exc.message, headers={"Retry-After": str(_TryAgainLater.RETRY_AFTER_SECONDS)}) from None
        return user.name if user is not None else None

    app = gr.mount_gradio_app(
        app,
        build_blocks(studio),
        path=STUDIO_PATH,
        auth_dependency=session_user,
        footer_links=[],
        run_history=False,
        max_file_size=backend.settings.max_upload_bytes,
        ssr_mode=False,
        i18n=studio.i18n,
        theme=gr.themes.Soft(primary_hue="violet", secondary_hue="pink"),
        css_paths=[ASSETS_DIR / "studio.css"],
        head=LANG_HEAD_SCRIPT,
    )
    app.add_middleware(_SignInRedirect, sessions=sessions)
    app.add_middleware(_TryAgainLater)  # added last: the outermost of ours
    return app
