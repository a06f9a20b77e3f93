"""The header every page shares (logo, navigation, balance, language, sign out) and the
notices that follow the user around the studio.

Gradio cannot translate ``demo.route`` names, so its navbar is hidden and the header
carries its own translated link buttons.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backend import jobs
from backend.accounts import ledger
from backend.errors import NotFound

from .context import Studio
from .i18n import lang_of, pick, t
from .render import esc, signout_form, who

NOTICE_SECONDS = 3.0
PAGES = (("create", "/studio/"), ("history", "/studio/history"), ("account", "/studio/account"), ("admin", "/studio/admin"))
BRAND = ('<div class="brand"><img src="/static/logo.svg" alt="">'
         '<span>AIGC Studio</span></div>')


@dataclass
class Header:
    nav: gr.HTML
    cursor: gr.State


def nav_html(current: str, *, name: str, balance: int, role: str, lang: str) -> str:
    """The header bar in the user's language (Gradio's own navbar cannot translate)."""
    links = "".join(
        f'<a href="{path}" id="nav-{page}" class="nav-link{" active" if page == current else ""}">{esc(t(f"nav.{page}", lang))}</a>'
        for page, path in PAGES if page != "admin" or role == "admin"
    )
    other = "en" if lang == "zh" else "zh"
    here = dict(PAGES)[current]
    return (
        f'<nav class="studio-nav">{BRAND}<div class="nav-links">{links}</div>{who(name, balance, role=role, lang=lang)}'
        f'<a href="/lang/{other}?next={here}" id="lang-switch" class="nav-link small">{esc(t("nav.lang", lang))}</a>'
        f'{signout_form(t("nav.signout", lang))}</nav>'
    )


def nav_for(studio: Studio, current: str, *, user_id: int, name: str, role: str, lang: str) -> str:
    """The header bar with the user's balance as the database has it now."""
    balance = ledger.balance_of(studio.backend.db, user_id)
    return nav_html(current, name=name, balance=balance, role=role, lang=lang)


def header(studio: Studio, demo: gr.Blocks, current: str, *, watched: gr.State | None = None) -> Header:
    """Build the header on the current page and wire its load and notice timer."""
    gr.Navbar(visible=False)
    nav = gr.HTML(f'<nav class="studio-nav">{BRAND}</nav>', js_on_load=None, elem_id="studio-header")
    head = Header(nav=nav, cursor=gr.State(0))

    def render(user_id: int, name: str, role: str, lang: str) -> str:
        return nav_for(studio, current, user_id=user_id, name=name, role=role, lang=lang)

    def on_load(request: gr.Request) -> tuple[str, int]:
        user = studio.user(request)
        return render(user.id, user.name, user.role, lang_of(request)), studio.feed.notice_cursor(user.id)

    demo.load(on_load, None, [nav, head.cursor], api_visibility="private", show_progress="hidden")

    def on_tick(cursor: int, watching: str | None, request: gr.Request) -> tuple[int, str]:
        user = studio.user(request)
        lang = lang_of(request)
        cursor, events = studio.feed.notices_since(user.id, cursor)
        for event in events:
            if event.get("job_id") and event.get("job_id") == watching:
                continue  # the progress card on this page already shows it
            _toast(studio, user.id, event, lang)
        if not events:
            return cursor, gr.skip()
        return cursor, render(user.id, user.name, user.role, lang)  # the balance moved

    watched_input = watched if watched is not None else gr.State(None)
    gr.Timer(NOTICE_SECONDS).tick(on_tick, [head.cursor, watched_input], [head.cursor, nav],
                                  api_visibility="private", show_progress="hidden")
    return head


def _toast(studio: Studio, user_id: int, event: dict, lang: str) -> None:
    kind = event.get("type")
    if kind == "notice":
        gr.Info(pick(event.get("text"), lang))
        return
    try:
        job = jobs.get(studio.backend.db, str(event.get("job_id")), user_id=user_id)
        title = studio.backend.library.get(job.workflow).title.get(lang)
    except NotFound:
        title = ""
    if kind == "succeeded":
        gr.Info(t("notice.succeeded", lang, workflow=title), title="✓")
    elif kind == "failed":
        gr.Warning(t("notice.failed", lang, workflow=title, reason=pick(event.get("reason"), lang)))
    elif kind == "cancelled":
        gr.Info(t("notice.cancelled", lang, workflow=title, amount=int(event.get("refunded") or 0)))
