"""The studio's language, chosen once, applies to everything on the page.

Gradio translates its browser-side texts (labels, tabs, buttons, workflow titles) from
``navigator.language`` as soon as its script has the config; the studio's own HTML
follows the ``studio_lang`` cookie the server reads. A ``head=`` script cannot line the
two up: Gradio adds it to the page only *after* it has set up its translations. So this
middleware rewrites the studio pages' HTML itself: a script at the very top of ``<head>``
makes ``navigator.language`` report the studio's language before any Gradio code runs.

The language of a page is, in order: the one saved with the account (chosen on any
device), the cookie, the browser's. The cookie is set to match, so every handler on
the page answers in the same language.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import anyio

from backend.accounts import preferences
from backend.accounts.sessions import Sessions
from backend.runtime import Backend

from .auth import SESSION_COOKIE
from .i18n import LANG_COOKIE, from_headers

LANG_SCRIPT = """<script>
(function () {{
  var l = "{locale}";
  try {{
    Object.defineProperty(navigator, "language", {{ get: function () {{ return l; }} }});
    Object.defineProperty(navigator, "languages", {{ get: function () {{ return [l]; }} }});
  }} catch (e) {{}}
  document.documentElement.lang = l;
}})();
</script>"""
COOKIE_SECONDS = 365 * 86400


def locale_of(lang: str) -> str:
    return "zh-CN" if lang == "zh" else "en"


def lang_cookie(lang: str) -> str:
    return f"{LANG_COOKIE}={lang}; Max-Age={COOKIE_SECONDS}; Path=/; SameSite=Lax"


class LanguageMiddleware:
    """Pure ASGI around the Gradio pages in ``paths`` (GET only; event streams pass)."""

    def __init__(self, app: Any, *, sessions: Sessions, backend: Backend, paths: frozenset[str],
                 default: str = "en") -> None:
        self.app = app
        self.sessions = sessions
        self.backend = backend
        self.paths = paths
        self.default = default

    def _choose(self, cookie: str | None, accept: str | None, token: str | None) -> str:
        user = self.sessions.resolve(token)
        saved = preferences.lang(self.backend.db, user.id) if user is not None else None
        if saved:
            return saved
        return from_headers(cookie, accept) if (cookie or accept) else self.default

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        cookies: SimpleCookie = SimpleCookie()
        accept = None
        headers = []
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                cookies.load(value.decode("latin-1"))
            elif name == b"accept-language":
                accept = value.decode("latin-1")
            if name != b"accept-encoding":  # the page must arrive uncompressed to be edited
                headers.append((name, value))
        cookie = cookies[LANG_COOKIE].value if LANG_COOKIE in cookies else None
        token = cookies[SESSION_COOKIE].value if SESSION_COOKIE in cookies else None
        lang = await anyio.to_thread.run_sync(self._choose, cookie, accept, token)
        script = LANG_SCRIPT.format(locale=locale_of(lang)).encode()
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def edit(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            content = b"".join(body)
            out = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in out):
                content = content.replace(b"<head>", b"<head>" + script, 1)
                if cookie != lang:
                    out.append((b"set-cookie", lang_cookie(lang).encode()))
            out.append((b"content-length", str(len(content)).encode()))
            await send({**start, "headers": out})
            await send({"type": "http.response.body", "body": content})

        await self.app({**scope, "headers": headers}, receive, edit)
