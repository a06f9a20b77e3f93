"""The Account page: balance, ledger and redeeming a code."""

from __future__ import annotations

import gradio as gr

from backend import codes, ledger
from backend.errors import StudioError

from ..context import Studio
from ..i18n import lang_of, t
from ..layout import header
from ..render import esc, message, table, when

LEDGER_ROWS = 100


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    header(studio, demo, "account")
    gr.Markdown(i18n("account.title"))
    with gr.Row(equal_height=True):
        with gr.Column(scale=1, min_width=240):
            gr.Markdown(i18n("account.balance"))
            balance = gr.HTML("", elem_id="account-balance", js_on_load=None)
        with gr.Column(scale=2, min_width=320):
            gr.Markdown(i18n("account.redeem"))
            with gr.Row(equal_height=True):
                code = gr.Textbox(label=i18n("account.code"), placeholder="XXXX-XXXX-XXXX-XXXX", elem_id="redeem-code",
                                  scale=3)
                go = gr.Button(i18n("account.redeem_go"), variant="primary", scale=1, elem_id="redeem")
            result = gr.HTML("", elem_id="redeem-result", js_on_load=None)
    gr.Markdown(i18n("account.ledger"))
    ledger_html = gr.HTML("", elem_id="ledger", js_on_load=None)

    def render(request: gr.Request) -> tuple[str, str]:
        user = studio.user(request)
        return account_html(studio, user.id, lang_of(request))

    def redeem(value: str, request: gr.Request) -> tuple[str, str, str, str]:
        user = studio.user(request)
        lang = lang_of(request)
        settings = studio.backend.settings
        try:
            amount = codes.redeem(studio.backend.db, user.id, value, max_failures=settings.redeem_max_failures,
                                  window_seconds=settings.redeem_window_seconds)
            note = message("ok", t("account.redeemed", lang, amount=amount))
        except StudioError as exc:
            note = message("error", exc.text(lang))
        top, rows = account_html(studio, user.id, lang)
        return "", note, top, rows

    demo.load(render, None, [balance, ledger_html], api_visibility="private")
    go.click(redeem, [code], [code, result, balance, ledger_html], api_name="redeem")


def account_html(studio: Studio, user_id: int, lang: str) -> tuple[str, str]:
    """(balance, ledger table) for a user."""
    with studio.backend.db.read() as s:
        amount = ledger.balance(s, user_id)
        entries = ledger.entries(s, user_id, limit=LEDGER_ROWS)
    top = f'<div class="big-balance" id="balance-amount">{amount}</div><div>{esc(t("credits", lang))}</div>'
    rows = [[esc(when(e.created_at)), esc(t(f"kind.{e.kind}", lang)),
             f'<b style="color:{"#166534" if e.amount > 0 else "#991b1b"}">{"+" if e.amount > 0 else ""}{e.amount}</b>',
             esc(e.balance_after), esc(e.note or (e.job_id[:8] if e.job_id else ""))] for e in entries]
    headers = [t("history.when", lang), t("ledger.kind", lang), t("ledger.amount", lang), t("ledger.balance", lang),
               t("ledger.note", lang)]
    return top, table(headers, rows, elem_id="ledger-table")
