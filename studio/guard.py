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
- **Someone else's Gradio session.** Gradio keys a page's state (the form's stored
  uploads, the job it watches) and its event stream by a ``session_hash`` the browser
  makes up, and never asks whose it is. The first signed-in user to use a hash owns it;
  anyone else naming it (to join events in it, read its stream or cancel its events) is
  refused with 403.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, RedirectResponse

from backend.accounts.sessions import Sessions

from .auth import SESSION_COOKIE

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
#: Routes whose JSON body names a session_hash, and the largest body read to find it.
HASH_IN_BODY = frozenset({"/gradio_api/queue/join", "/gradio_api/cancel"})
MAX_EVENT_BODY = 4 * 1024 * 1024
#: Gradio sessions remembered per process (the oldest are forgotten first).
MAX_SESSION_HASHES = 100_000


class _TooLarge(Exception):
    """An event body over ``MAX_EVENT_BODY``."""


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
        self._owners: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

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
            refusal, receive = await self._studio_route(scope, receive, method, path[len(STUDIO_PATH):])
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _studio_route(self, scope: dict, receive: Callable, method: str, route: str) -> tuple[Any, Callable]:
        if route in PUBLIC_PATHS or route.startswith(PUBLIC_PREFIXES):
            return None, receive
        page = route in PAGES
        if not page and route not in GRADIO_ROUTES and not route.startswith(GRADIO_PREFIXES):
            return PlainTextResponse("Not found", status_code=404), receive
        token = session_cookie(scope)
        user = await run_in_threadpool(self.sessions.resolve, token) if token else None
        if user is None:
            if page and method == "GET":
                query = scope.get("query_string", b"").decode("latin-1")
                target = STUDIO_PATH + route + ("?" + query if query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303), receive
            return PlainTextResponse("Not signed in", status_code=401), receive
        try:
            session_hash, receive = await self._session_hash(scope, receive, route)
        except _TooLarge:
            return PlainTextResponse("Request too large", status_code=413), receive
        if session_hash is not None and not self._owned_by(session_hash, user.id):
            log.warning("user %s named another user's Gradio session on %s", user.name, route)
            return PlainTextResponse("Not your session", status_code=403), receive
        return None, receive

    async def _session_hash(self, scope: dict, receive: Callable, route: str) -> tuple[str | None, Callable]:
        """The ``session_hash`` a Gradio request names (its body is read and replayed)."""
        if route == "/gradio_api/queue/data":
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
            return (values[0] if values else None), receive
        if route.startswith("/gradio_api/heartbeat/"):
            return route.rsplit("/", 1)[-1], receive
        if route not in HASH_IN_BODY:
            return None, receive
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_EVENT_BODY:
                raise _TooLarge
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            value = json.loads(body).get("session_hash")
        except (ValueError, AttributeError):
            value = None
        return (value if isinstance(value, str) else None), replay

    def _owned_by(self, session_hash: str, user_id: int) -> bool:
        with self._lock:
            owner = self._owners.setdefault(session_hash, user_id)
            self._owners.move_to_end(session_hash)
            while len(self._owners) > MAX_SESSION_HASHES:
                self._owners.popitem(last=False)
        return owner == user_id
