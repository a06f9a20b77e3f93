"""What may reach the studio at all, checked before any route runs (pure ASGI, so Gradio's
event streams pass through untouched):

- **Cross-site requests.** A state-changing request (any method but GET, HEAD, OPTIONS)
  whose ``Origin`` — or, when a browser sends none, ``Referer`` — names another site is
  refused with 403. Browsers send ``Origin`` with every POST, so a form on another site
  can neither sign someone in to an attacker's account (login CSRF), nor sign them out,
  nor fire a Gradio event; programs that are not browsers send neither header and are
  unaffected (they need a session cookie of their own anyway).
- **Signed-out visitors.** A studio page redirects to ``/login?next=...`` (Gradio would
  answer 401 JSON); every other Gradio route answers 401, including the ones Gradio
  itself leaves open (``/cancel``).
- **Gradio routes the pages do not use** answer 404: Gradio mounts many (its REST API
  ``/call``, ``/run`` and ``/api``, ``/info``, ``/component_server``, deep links,
  monitoring, run history, ...), and each is one more way in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, RedirectResponse

from .auth import SESSION_COOKIE, Sessions

log = logging.getLogger(__name__)

STUDIO_PATH = "/studio"
PAGES = frozenset({"", "/", "/history", "/account", "/admin"})
#: Gradio's front-end files: the same for everyone, served without a session.
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/")
PUBLIC_PATHS = frozenset({"/theme.css", "/manifest.json"})
#: The Gradio routes the studio's pages use; a session is required for each.
GRADIO_ROUTES = frozenset({"/config", "/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/upload",
                           "/gradio_api/upload_progress", "/gradio_api/cancel", "/gradio_api/reset"})
GRADIO_PREFIXES = ("/gradio_api/file=", "/gradio_api/heartbeat/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def same_site(scope: dict) -> bool:
    """Whether a request comes from the studio's own pages (or from no browser at all)."""
    origin = _header(scope, b"origin") or _header(scope, b"referer")
    if origin is None:
        return _header(scope, b"sec-fetch-site") in (None, "same-origin", "none")
    if origin == "null":  # sandboxed frames, file: pages, some redirects: never ours
        return False
    host = (_header(scope, b"host") or "").lower()
    return bool(host) and urlsplit(origin).netloc.lower() == host


def session_cookie(scope: dict) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(raw)
    except CookieError:
        return None
    return cookies[SESSION_COOKIE].value if SESSION_COOKIE in cookies else None


class Guard:
    """The checks of the module docstring, in front of the whole app.

    ``proxies_trusted`` says whether ``trusted_proxies`` is set; when it is not, a
    request carrying ``X-Forwarded-For`` means a proxy nobody told the studio about, so
    every client looks like that proxy to the per-address limits: that is logged once.
    """

    def __init__(self, app: Any, sessions: Sessions, *, proxies_trusted: bool = False) -> None:
        self.app = app
        self.sessions = sessions
        self._warn_forwarded = not proxies_trusted

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._warn_forwarded and _header(scope, b"x-forwarded-for") is not None:
            self._warn_forwarded = False
            log.warning("a request came through a proxy (X-Forwarded-For) that is not in trusted_proxies: every "
                        "client behind it shares the proxy's address for the per-address limits; set "
                        "STUDIO_TRUSTED_PROXIES (docs/security.md)")
        method, path = scope.get("method", "GET"), scope.get("path", "")
        if method not in SAFE_METHODS and not same_site(scope):
            await PlainTextResponse("Cross-site request refused", status_code=403)(scope, receive, send)
            return
        if path == STUDIO_PATH or path.startswith(STUDIO_PATH + "/"):
            refusal = await self._studio_route(scope, method, path[len(STUDIO_PATH):])
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _studio_route(self, scope: dict, method: str, route: str) -> Any:
        if route in PUBLIC_PATHS or route.startswith(PUBLIC_PREFIXES):
            return None
        page = route in PAGES
        if not page and route not in GRADIO_ROUTES and not route.startswith(GRADIO_PREFIXES):
            return PlainTextResponse("Not found", status_code=404)
        token = session_cookie(scope)
        if token and await run_in_threadpool(self.sessions.resolve, token) is not None:
            return None
        if page and method == "GET":
            query = scope.get("query_string", b"").decode("latin-1")
            target = STUDIO_PATH + route + ("?" + query if query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return PlainTextResponse("Not signed in", status_code=401)
