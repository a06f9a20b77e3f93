"""The studio web app: FastAPI owns sign-in, sessions and files; Gradio is mounted under
``/studio`` with our session as its ``auth_dependency``.

Routes:

- ``/login``, ``/signup``, ``/logout``, ``/lang/{en|zh}``: plain pages (:mod:`.pages.signin`)
- ``/studio/`` (Create), ``/studio/history``, ``/studio/account``, ``/studio/admin``: Gradio
- ``/files/{sha256}``: outputs, uploads and previews, to their owner only (:mod:`.files`)
- ``/static/*`` (logo, css) and ``/examples/{workflow}.png`` (workflow example images)
- ``/api/v1/...``: the integrators' REST API with bearer tokens, ``/api/docs`` and
  ``/api/openapi.json`` (:mod:`studio.api`, docs/api.md)
- ``/metrics``: Prometheus text (:func:`backend.metrics.render`) to loopback clients, or
  to any client with ``Authorization: Bearer <metrics_token>`` when that setting is set

In front of all of it, :class:`~studio.guard.Guard` refuses cross-site form posts,
signed-out visitors and the Gradio routes the pages do not use, and — when
``trusted_proxies`` is set — uvicorn's proxy-headers middleware takes the client's
address and scheme from ``X-Forwarded-For``/``-Proto`` of those proxies only.
While the database (or another service) is away, a request answers 503 "try again in a
moment" with ``Retry-After`` (:class:`_TryAgainLater`) instead of an error page, and a
Gradio action shows the same sentence; everything works again once it is back.

The entry point builds the :class:`~backend.runtime.Backend` and a running worker, then
serves :func:`create_app` with uvicorn; the user-event :class:`~studio.feed.Feed` starts
and stops with the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fastapi
import gradio as gr
from argon2 import PasswordHasher
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from backend import metrics
from backend.accounts import throttle
from backend.config import Settings
from backend.errors import Unavailable
from backend.accounts.passwords import DEFAULT_HASHER
from backend.runtime import Backend

from backend.accounts.sessions import Sessions

from .api import API_PATH, build_api
from .auth import SESSION_COOKIE
from .context import Studio
from .errors import Blocks
from .feed import Feed
from .files import add_file_routes
from .guard import PAGES, STUDIO_PATH, Guard
from .i18n import build_i18n
from .language import LanguageMiddleware
from .pages import account, admin, create, history
from .pages.signin import add_signin_routes
from .uploads import Uploads, add_upload_routes

log = logging.getLogger(__name__)

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def build_blocks(studio: Studio) -> gr.Blocks:
    """The Gradio app: Create on the main page, one route per other page.

    Its events report failures through :mod:`studio.errors`. The admin page's events are
    no public API: ``/gradio_api/info`` never lists them to anyone (they refuse callers
    who are not administrators themselves, see :meth:`Studio.admin`).
    """
    with Blocks(title="AIGC Studio", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        create.build(studio, demo)
    with demo.route("History", "/history"):
        history.build(studio, demo)
    with demo.route("Account", "/account"):
        account.build(studio, demo)
    with demo.route("Admin", "/admin"):
        admin.build(studio, demo)
    for fn in demo.fns.values():
        if fn.page == "admin":
            fn.api_visibility = "private"
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

    A request a proxy relayed (it carries ``X-Forwarded-For`` or ``Forwarded``) is never
    taken for a loopback client, even when the proxy itself runs on this host: otherwise
    a same-host proxy would publish the metrics to everyone. With ``trusted_proxies``
    set, the client address is the one the proxy reports, so the same holds.
    """
    relayed = "x-forwarded-for" in request.headers or "forwarded" in request.headers
    if _loopback(request.client.host if request.client else None) and not relayed:
        return True
    if not token:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode())


#: How often the app deletes old uploads and forgotten rate-limit rows.
HOUSEKEEPING_SECONDS = 600
THROTTLE_ROWS_KEPT = dt.timedelta(days=1)


async def housekeeping(studio: Studio) -> None:
    """Now and every ``HOUSEKEEPING_SECONDS``: expired uploads and stale throttle rows go."""
    while True:
        try:
            removed = await run_in_threadpool(studio.uploads.sweep)
            purged = await run_in_threadpool(throttle.purge, studio.backend.db, older_than=THROTTLE_ROWS_KEPT)
            if removed or purged:
                log.info("housekeeping: %d expired upload(s), %d old rate-limit row(s) removed", removed, purged)
        except Exception:  # noqa: BLE001 - retried next time; the studio runs on
            log.exception("housekeeping failed")
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


def blocked_paths(settings: Settings) -> list[str]:
    """Server paths Gradio must never copy into its cache or serve, whatever names them."""
    database = settings.effective_database_url.removeprefix("sqlite:///")
    paths = [settings.assets_dir, settings.workflows_dir, Path("/proc"), Path("/etc"), Path("/sys")]
    if database != settings.effective_database_url:
        paths += [Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return [str(Path(p).resolve()) for p in paths]


class _TryAgainLater:
    """Answers 503 with ``Retry-After`` when a request fails because a service is away
    (``backend.errors.Unavailable``: the database restarting, Redis or RabbitMQ gone),
    instead of a 500 and a traceback. Pure ASGI and outside the guard, so it also covers
    the guard's session check."""

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
) -> fastapi.FastAPI:
    """The studio as an ASGI app over a built ``backend``.

    ``wake`` asks the dispatcher for a pass (pass ``Worker.wake``). ``lang_default`` is
    the language when a browser sends no preference. The app's ``state.studio`` holds the
    :class:`Studio` (backend, feed, sessions, uploads) for the entry point and tests.
    Uploads go to Gradio's upload folder (``GRADIO_TEMP_DIR``; the entry point puts it
    under the data directory).
    """
    settings = backend.settings
    feed = Feed(backend.bus)
    sessions = Sessions(backend.db)
    uploads = Uploads(max_bytes=settings.max_upload_bytes)
    studio = Studio(backend=backend, feed=feed, sessions=sessions, wake=wake, hasher=password_hasher,
                    i18n=build_i18n(backend.library), uploads=uploads)

    @contextlib.asynccontextmanager
    async def lifespan(_app: fastapi.FastAPI) -> AsyncIterator[None]:
        feed.start()
        try:
            purged = sessions.purge_expired()
        except Unavailable as exc:  # the next start purges them; the studio serves meanwhile
            log.warning("expired sessions not purged now: %s", exc)
            purged = 0
        log.info("studio started (%d expired sessions removed)", purged)
        chores = asyncio.create_task(housekeeping(studio))
        try:
            yield
        finally:
            chores.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chores
            feed.stop()

    app = fastapi.FastAPI(title="AIGC Studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    add_signin_routes(app, studio, lang_default=lang_default)
    add_file_routes(app, studio)
    add_upload_routes(app, uploads, sessions)  # ahead of Gradio's own upload and file routes
    app.mount("/static", StaticFiles(directory=ASSETS_DIR), name="static")
    app.mount(API_PATH, build_api(studio))

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
        if not metrics_allowed(request, settings.metrics_token):
            return PlainTextResponse("Forbidden", status_code=403)
        return PlainTextResponse(metrics.render(backend), media_type=METRICS_TYPE,
                                 headers={"Cache-Control": "no-store"})

    def session_user(request: fastapi.Request) -> str | None:
        try:
            user = sessions.resolve(request.cookies.get(SESSION_COOKIE))
        except Unavailable as exc:  # inside Gradio's own app, beyond _TryAgainLater's reach
            raise fastapi.HTTPException(503, exc.message, headers={"Retry-After": str(_TryAgainLater.RETRY_AFTER_SECONDS)}) from None
        return user.name if user is not None else None

    blocks = build_blocks(studio)
    app = gr.mount_gradio_app(
        app,
        blocks,
        path=STUDIO_PATH,
        auth_dependency=session_user,
        footer_links=[],
        run_history=False,
        max_file_size=settings.max_upload_bytes,
        blocked_paths=blocked_paths(settings),
        show_error=False,  # only messages of studio.errors are shown; anything else stays in the log
        ssr_mode=False,
        i18n=studio.i18n,
        theme=gr.themes.Soft(primary_hue="violet", secondary_hue="pink"),
        css_paths=[ASSETS_DIR / "studio.css"],
    )
    # Middleware added later runs earlier: the proxy headers, "try again later" while a
    # service is away, the guard, then the page language (for requests the guard let through).
    app.add_middleware(LanguageMiddleware, sessions=sessions, backend=backend,
                       paths=frozenset(STUDIO_PATH + page for page in PAGES), default=lang_default)
    # ``Blocks.launch()`` marks the app launched; ``mount_gradio_app`` does not, and while
    # ``has_launched`` is False Gradio's ``_check_allowed`` returns at once: an event
    # handler would then accept *any* server path as an uploaded file (and copy the file
    # into Gradio's cache, where ``/file=`` serves it). Launched, Gradio accepts only
    # files under its upload folder as inputs, and never ``blocked_paths``.
    blocks.has_launched = True
    app.add_middleware(Guard, sessions=sessions, proxies_trusted=bool(settings.trusted_proxies))
    app.add_middleware(_TryAgainLater)
    if settings.trusted_proxies:
        # Outermost: the guard and every route see the client's address and scheme.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app
