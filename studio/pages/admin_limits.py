"""The Admin page's Limits tab: a user's per-user limits, their overrides and usage, and
setting one (:mod:`backend.jobs.limits`; the API and the CLI do the same)."""

from __future__ import annotations

from dataclasses import asdict

import gradio as gr

from backend import accounts
from backend.errors import StudioError
from backend.jobs import limits

from ..context import Studio
from ..i18n import lang_of, t
from ..render import esc, message, table


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    gr.Markdown(i18n("limits.intro"))
    with gr.Row(equal_height=True):
        who = gr.Textbox(label=i18n("limits.user"), elem_id="limits-user", max_length=64)
        which = gr.Dropdown(choices=list(limits.NAMES), value=limits.NAMES[0], label=i18n("limits.limit"),
                            elem_id="limits-name")
        value = gr.Textbox(label=i18n("limits.value"), elem_id="limits-value", max_length=20)
    with gr.Row():
        show = gr.Button(i18n("limits.show"), elem_id="limits-show")
        put = gr.Button(i18n("limits.set"), variant="primary", elem_id="limits-set")
    result = gr.HTML("", elem_id="limits-result", js_on_load=None)

    def render(name: str, request: gr.Request) -> str:
        studio.admin(request)
        lang = lang_of(request)
        try:
            return limits_html(studio, name, lang)
        except StudioError as exc:
            return message("error", exc.text(lang))

    def change(name: str, limit: str, raw: str, request: gr.Request) -> str:
        studio.admin(request)
        lang = lang_of(request)
        text = (raw or "").strip().lower()
        try:
            user = accounts.user_named(studio.backend.db, name or "")
            number = None if text == "default" else int(text)
            limits.set_override(studio.backend.db, user.id, limit, number)
            return message("ok", t("admin.done", lang)) + limits_html(studio, user.name, lang)
        except ValueError:
            return message("error", t("limits.value", lang))
        except StudioError as exc:
            return message("error", exc.text(lang))

    show.click(render, [who], result, api_visibility="private", show_progress="hidden")
    put.click(change, [who, which, value], result, api_visibility="private", show_progress="hidden")


def limits_html(studio: Studio, name: str, lang: str) -> str:
    backend = studio.backend
    user = accounts.user_named(backend.db, name or "")
    applies = limits.effective(backend.db, backend.settings, user.id)
    overrides = limits.overrides(backend.db, user.id)
    usage = asdict(limits.usage(backend.db, user.id))
    none = t("limits.none", lang)
    rows = [[f"<code>{esc(n)}</code>", esc(applies[n] or none), esc(overrides.get(n, ""))] for n in limits.NAMES]
    usage_rows = [[esc(k), esc(v)] for k, v in usage.items()]
    return (table([t("limits.name", lang), t("limits.applies", lang), t("limits.override", lang)], rows,
                  elem_id="limits-table")
            + table([t("limits.usage", lang), ""], usage_rows, elem_id="usage-table"))
