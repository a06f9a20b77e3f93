"""The Account page's API tokens: make one (shown once), list them, revoke one. The
rules (scopes, who may make admin tokens, expiry) are :mod:`backend.accounts.tokens`'."""

from __future__ import annotations

import datetime as dt

import gradio as gr

from backend.accounts import tokens
from backend.errors import StudioError

from ..context import Studio
from ..i18n import lang_of, t
from ..render import esc, message, table, when


def tokens_section(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    gr.Markdown(i18n("tokens.title"))
    gr.Markdown(i18n("tokens.intro"))
    with gr.Row(equal_height=True):
        name = gr.Textbox(label=i18n("tokens.name"), elem_id="token-name", max_length=64, scale=3)
        scope = gr.Dropdown(choices=list(tokens.TOKEN_SCOPES), value="jobs", label=i18n("tokens.scope"), elem_id="token-scope",
                            scale=1)
        days = gr.Number(value=0, minimum=0, maximum=3650, precision=0, label=i18n("tokens.days"), elem_id="token-days",
                         scale=1)
        make = gr.Button(i18n("tokens.create"), variant="primary", elem_id="token-create", scale=1)
    made = gr.HTML("", elem_id="token-result", js_on_load=None)
    listing = gr.HTML("", elem_id="token-list", js_on_load=None)
    with gr.Row(equal_height=True):
        which = gr.Textbox(label=i18n("tokens.id"), elem_id="token-revoke-id", max_length=12, scale=1)
        revoke = gr.Button(i18n("tokens.revoke"), variant="stop", elem_id="token-revoke", scale=1)

    def render(request: gr.Request) -> str:
        user = studio.user(request)
        return tokens_html(studio, user.id, lang_of(request))

    def create(label: str, chosen: str, expiry: float | None, request: gr.Request) -> tuple[str, str, str]:
        user = studio.user(request)
        lang = lang_of(request)
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=float(expiry)) if expiry else None
        try:
            secret, _ = tokens.create(studio.backend.db, user.id, label or "", scope=chosen or "jobs", expires_at=expires)
        except StudioError as exc:
            return gr.skip(), message("error", exc.text(lang)), tokens_html(studio, user.id, lang)
        shown = f'{esc(t("tokens.made", lang))}<br><code id="token-secret">{esc(secret)}</code>'
        return "", f'<div class="msg ok">{shown}</div>', tokens_html(studio, user.id, lang)

    def remove(token_id: str, request: gr.Request) -> tuple[str, str, str]:
        user = studio.user(request)
        lang = lang_of(request)
        try:
            number = int((token_id or "").strip())
            tokens.revoke(studio.backend.db, user.id, number)
        except ValueError:
            return gr.skip(), message("error", t("tokens.none", lang)), tokens_html(studio, user.id, lang)
        except StudioError as exc:
            return gr.skip(), message("error", exc.text(lang)), tokens_html(studio, user.id, lang)
        return "", message("ok", t("tokens.revoked", lang, id=number)), tokens_html(studio, user.id, lang)

    demo.load(render, None, listing, api_visibility="private", show_progress="hidden")
    make.click(create, [name, scope, days], [name, made, listing], api_visibility="private", show_progress="hidden")
    revoke.click(remove, [which], [which, made, listing], api_visibility="private", show_progress="hidden")


def tokens_html(studio: Studio, user_id: int, lang: str) -> str:
    rows = tokens.list_for_user(studio.backend.db, user_id)
    if not rows:
        return f'<p id="no-tokens">{esc(t("tokens.none", lang))}</p>'
    never = t("tokens.never", lang)
    cells = [[esc(r.id), f"<code>{esc(r.prefix)}…</code>", esc(r.name), esc(r.scope), esc(when(r.created_at)),
              esc(when(r.expires_at) or never), esc(when(r.last_used_at) or never)] for r in rows]
    headers = [t("tokens.id", lang), t("tokens.prefix", lang), t("tokens.name", lang), t("tokens.scope", lang),
               t("tokens.created", lang), t("tokens.expires", lang), t("tokens.last_used", lang)]
    return table(headers, cells, elem_id="token-table")
