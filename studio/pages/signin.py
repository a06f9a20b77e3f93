"""Sign in, sign up, sign out and the language switch: plain FastAPI pages.

They sit outside Gradio so that the session cookie is ours (see :mod:`studio.auth`)
and so that an unauthenticated visitor never loads the Gradio app at all. Every form
posts to its own site only (:mod:`studio.guard` refuses foreign origins), and signing
out is a POST: a link or an image on another page cannot sign anyone out.
"""

from __future__ import annotations

import asyncio
import html
from urllib.parse import quote

import fastapi
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from backend.accounts import app_settings, preferences
from backend.accounts.sessions import SESSION_DAYS
from backend.accounts.signin import sign_in, sign_in_delay, sign_up
from backend.errors import AuthError, RateLimited, StudioError

from ..auth import SESSION_COOKIE
from ..context import Studio
from ..guard import STUDIO_PATH
from ..i18n import LANG_COOKIE, from_headers, normalize
from ..render import signout_form
#: A wrong password costs the caller this long, on top of the database throttle.
FAILURE_PAUSE_SECONDS = 0.8

_TEXT = {
    "en": {
        "title_in": "Sign in", "title_up": "Create your account", "name": "User name", "password": "Password",
        "password2": "Repeat the password", "invite": "Invite code", "go_in": "Sign in", "go_up": "Create account",
        "to_up": "No account yet? <a href='/signup{q}'>Sign up</a>", "to_in": "Have an account? <a href='/login{q}'>Sign in</a>",
        "closed": "Sign-up is closed; ask an administrator for an account.", "mismatch": "The passwords differ.",
        "tagline": "Create images with AI, on our GPUs.", "title_out": "Sign out", "go_out": "Sign out",
        "go_out_all": "Sign out on all devices",
    },
    "zh": {
        "title_in": "登录", "title_up": "注册新账户", "name": "用户名", "password": "密码", "password2": "再次输入密码",
        "invite": "邀请码", "go_in": "登录", "go_up": "注册", "to_up": "还没有账户？<a href='/signup{q}'>注册</a>",
        "to_in": "已有账户？<a href='/login{q}'>登录</a>", "closed": "注册已关闭，请联系管理员开通账户。",
        "mismatch": "两次输入的密码不一致。", "tagline": "用 AI 创作图像，算力由我们提供。", "title_out": "退出登录",
        "go_out": "退出登录", "go_out_all": "在所有设备上退出登录",
    },
}


def safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect after sign-in would help phishing."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return STUDIO_PATH + "/"


def request_lang(request: fastapi.Request, default: str) -> str:
    cookie = request.cookies.get(LANG_COOKIE)
    accept = request.headers.get("accept-language")
    return from_headers(cookie, accept) if (cookie or accept) else normalize(default)


def _page(lang: str, title: str, body: str, *, path: str, next_path: str) -> HTMLResponse:
    other = "en" if lang == "zh" else "zh"
    switch = f"/lang/{other}?next={quote(path + '?next=' + quote(next_path), safe='')}"
    label = "English" if lang == "zh" else "中文"
    doc = f"""<!doctype html><html lang="{'zh-CN' if lang == 'zh' else 'en'}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)} · AIGC Studio</title>
<link rel="icon" href="/static/logo.svg"><link rel="stylesheet" href="/static/studio.css"></head>
<body class="auth"><main class="auth-card"><div class="lang"><a id="lang-switch" href="{switch}">{label}</a></div>
<div class="logo"><img src="/static/logo.svg" alt="">AIGC Studio</div>
<h1>{html.escape(_TEXT[lang]['tagline'])}</h1>{body}</main></body></html>"""
    return HTMLResponse(doc, headers={"Cache-Control": "no-store"})


def _field(label: str, name: str, kind: str = "text", value: str = "", auto: str = "") -> str:
    return (f'<label for="{name}">{html.escape(label)}</label><input id="{name}" name="{name}" type="{kind}" '
            f'value="{html.escape(value)}" autocomplete="{auto}" required>')


def _error(message: str) -> str:
    return f'<p class="error" id="auth-error">{html.escape(message)}</p>' if message else ""


def client_address(request: fastapi.Request) -> str | None:
    """The client's address (a trusted proxy's ``X-Forwarded-For`` already applied)."""
    return request.client.host if request.client else None


def add_signin_routes(app: fastapi.FastAPI, studio: Studio, *, lang_default: str = "en") -> None:
    db, settings = studio.backend.db, studio.backend.settings

    def login_page(lang: str, next_path: str, *, name: str = "", error: str = "", status: int = 200) -> HTMLResponse:
        t = _TEXT[lang]
        q = f"?next={quote(next_path)}"
        alt = "" if app_settings.signup_mode(db, settings) == "off" else f'<p class="alt">{t["to_up"].format(q=q)}</p>'
        body = (f'{_error(error)}<form method="post" action="/login{q}">'
                f'{_field(t["name"], "name", value=name, auto="username")}'
                f'{_field(t["password"], "password", "password", auto="current-password")}'
                f'<button type="submit" id="signin">{t["go_in"]}</button></form>{alt}')
        response = _page(lang, t["title_in"], body, path="/login", next_path=next_path)
        response.status_code = status
        return response

    def signup_page(lang: str, next_path: str, *, name: str = "", error: str = "", status: int = 200) -> HTMLResponse:
        t = _TEXT[lang]
        q = f"?next={quote(next_path)}"
        mode = app_settings.signup_mode(db, settings)
        if mode == "off":
            body = f'{_error(t["closed"])}<p class="alt">{t["to_in"].format(q=q)}</p>'
            return _page(lang, t["title_up"], body, path="/signup", next_path=next_path)
        invite = _field(t["invite"], "invite", auto="off") if mode == "invite" else ""
        body = (f'{_error(error)}<form method="post" action="/signup{q}">'
                f'{_field(t["name"], "name", value=name, auto="username")}'
                f'{_field(t["password"], "password", "password", auto="new-password")}'
                f'{_field(t["password2"], "password2", "password", auto="new-password")}{invite}'
                f'<button type="submit" id="signup">{t["go_up"]}</button></form>'
                f'<p class="alt">{t["to_in"].format(q=q)}</p>')
        response = _page(lang, t["title_up"], body, path="/signup", next_path=next_path)
        response.status_code = status
        return response

    def signed_in(request: fastapi.Request, user_id: int, next_path: str) -> RedirectResponse:
        token = studio.sessions.create(user_id)
        response = RedirectResponse(safe_next(next_path), status_code=303)
        secure = settings.secure_cookies or request.url.scheme == "https"
        response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_DAYS * 86400, httponly=True, samesite="lax",
                            secure=secure, path="/")
        return response

    @app.get("/login", response_class=HTMLResponse)
    def get_login(request: fastapi.Request, next: str = "") -> fastapi.Response:
        if studio.sessions.resolve(request.cookies.get(SESSION_COOKIE)) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        return login_page(request_lang(request, lang_default), safe_next(next))

    @app.post("/login")
    async def post_login(request: fastapi.Request, next: str = "",
                         name: str = fastapi.Form(""), password: str = fastapi.Form("")) -> fastapi.Response:
        lang = request_lang(request, lang_default)
        # Past a name's ceiling every attempt for it waits here, without holding a thread.
        await asyncio.sleep(await run_in_threadpool(sign_in_delay, db, name))
        try:
            user = await run_in_threadpool(sign_in, db, settings, name, password, address=client_address(request),
                                           hasher=studio.hasher)
        except StudioError as exc:
            if isinstance(exc, AuthError):
                await asyncio.sleep(FAILURE_PAUSE_SECONDS)
            status = 429 if isinstance(exc, RateLimited) else 401
            return login_page(lang, safe_next(next), name=name, error=exc.text(lang), status=status)
        return signed_in(request, user.id, next)

    @app.get("/signup", response_class=HTMLResponse)
    def get_signup(request: fastapi.Request, next: str = "") -> HTMLResponse:
        return signup_page(request_lang(request, lang_default), safe_next(next))

    @app.post("/signup")
    async def post_signup(request: fastapi.Request, next: str = "", name: str = fastapi.Form(""),
                          password: str = fastapi.Form(""), password2: str = fastapi.Form(""),
                          invite: str = fastapi.Form("")) -> fastapi.Response:
        lang = request_lang(request, lang_default)
        if password != password2:
            return signup_page(lang, safe_next(next), name=name, error=_TEXT[lang]["mismatch"], status=400)
        try:
            user = await run_in_threadpool(sign_up, db, settings, name, password, invite_code=invite,
                                           address=client_address(request), hasher=studio.hasher)
        except StudioError as exc:
            status = 429 if isinstance(exc, RateLimited) else 400
            return signup_page(lang, safe_next(next), name=name, error=exc.text(lang), status=status)
        return signed_in(request, user.id, next)

    @app.get("/logout", response_class=HTMLResponse)
    def logout_page(request: fastapi.Request) -> HTMLResponse:
        """A page with the sign-out button, for old links: GET never signs anyone out."""
        lang = request_lang(request, lang_default)
        t = _TEXT[lang]
        body = signout_form(t["go_out"]) + signout_form(t["go_out_all"], everywhere=True, elem_id="signout-all")
        return _page(lang, t["title_out"], body, path="/logout", next_path=STUDIO_PATH + "/")

    @app.post("/logout")
    def logout(request: fastapi.Request, everywhere: str = fastapi.Form("")) -> RedirectResponse:
        token = request.cookies.get(SESSION_COOKIE)
        user = studio.sessions.resolve(token)
        if everywhere and user is not None:
            studio.sessions.revoke_user(user.id)
        else:
            studio.sessions.revoke(token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/lang/{code}")
    def set_lang(request: fastapi.Request, code: str, next: str = "") -> RedirectResponse:
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(LANG_COOKIE, normalize(code), max_age=365 * 86400, samesite="lax", path="/")
        user = studio.sessions.resolve(request.cookies.get(SESSION_COOKIE))
        if user is not None:  # the choice follows the account to other browsers
            preferences.set_lang(db, user.id, normalize(code))
        return response
