"""The Account page: balance, ledger, redeeming a code, API tokens, changing the password."""

from __future__ import annotations

import gradio as gr
from backend import accounts
from backend.accounts import codes, ledger
from backend.errors import StudioError

from ..context import Studio
from ..i18n import lang_of, t
from ..layout import header, nav_for
from ..render import esc, message, signout_form, table, when
from .tokens import tokens_section

LEDGER_ROWS = 100


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    head = header(studio, demo, "account")
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
    tokens_section(studio, demo)
    password_section(studio, demo)

    def render(request: gr.Request) -> tuple[str, str]:
        user = studio.user(request)
        return account_html(studio, user.id, lang_of(request))

    def redeem(value: str, request: gr.Request) -> tuple[str, str, str, str, str]:
        user = studio.user(request)
        lang = lang_of(request)
        settings = studio.backend.settings
        try:
            amount = codes.redeem(studio.backend.db, user.id, value, max_failures=settings.redeem_max_failures,
                                  window_seconds=settings.redeem_window_seconds,
                                  address=request.client.host if request.client else None)
            note = message("ok", t("account.redeemed", lang, amount=amount))
        except StudioError as exc:
            note = message("error", exc.text(lang))
        top, rows = account_html(studio, user.id, lang)
        nav = nav_for(studio, "account", user_id=user.id, name=user.name, role=user.role, lang=lang)
        return "", note, top, rows, nav  # the header's balance moves with the page's

    demo.load(render, None, [balance, ledger_html], api_visibility="private", show_progress="hidden")
    go.click(redeem, [code], [code, result, balance, ledger_html, head.nav], api_name="redeem", show_progress="hidden")


def password_section(studio: Studio, demo: gr.Blocks) -> None:
    """Change the password (the current one required), then everyone is signed out; or
    just sign out everywhere. A change ends every session, this one too, so the page
    takes the user to the sign-in page."""
    i18n = studio.i18n
    gr.Markdown(i18n("account.password"))
    with gr.Row(equal_height=True):
        current = gr.Textbox(label=i18n("account.current_password"), type="password", elem_id="current-password",
                             max_length=256)
        new = gr.Textbox(label=i18n("account.new_password"), type="password", elem_id="new-password", max_length=256)
        again = gr.Textbox(label=i18n("account.new_password2"), type="password", elem_id="new-password2",
                           max_length=256)
    with gr.Row(equal_height=True):
        change = gr.Button(i18n("account.change_password"), elem_id="change-password", scale=1)
        everywhere = gr.HTML("", elem_id="signout-everywhere", js_on_load=None, scale=1)
    changed = gr.HTML("", elem_id="password-result", js_on_load=None)

    def render(request: gr.Request) -> str:
        studio.user(request)
        return signout_form(t("account.signout_all", lang_of(request)), everywhere=True, elem_id="signout-all")

    def change_password(old: str, first: str, second: str, request: gr.Request) -> tuple[str, str, str, str]:
        user = studio.user(request)
        lang = lang_of(request)
        if first != second:
            return gr.skip(), gr.skip(), gr.skip(), message("error", t("account.passwords_differ", lang))
        try:
            accounts.change_password(studio.backend.db, user.id, old or "", first or "", hasher=studio.hasher)
        except StudioError as exc:
            return "", gr.skip(), gr.skip(), message("error", exc.text(lang))
        studio.sessions.revoke_user(user.id)  # the rows are gone; this drops this process's cache too
        return "", "", "", message("ok", t("account.password_changed", lang), elem_id="password-changed")

    demo.load(render, None, everywhere, api_visibility="private")
    change.click(change_password, [current, new, again], [current, new, again, changed], api_visibility="private").then(
        None, None, None, js="() => { if (document.getElementById('password-changed')) "
                             "setTimeout(() => window.location.assign('/login'), 2500); }")


def account_html(studio: Studio, user_id: int, lang: str) -> tuple[str, str]:
    """(balance, ledger table) for a user."""
    page = ledger.ledger_page(studio.backend.db, user_id, limit=LEDGER_ROWS)
    top = f'<div class="big-balance" id="balance-amount">{page.balance}</div><div>{esc(t("credits", lang))}</div>'
    rows = [[esc(when(e.created_at)), esc(t(f"kind.{e.kind}", lang)),
             f'<b style="color:{"#166534" if e.amount > 0 else "#991b1b"}">{"+" if e.amount > 0 else ""}{e.amount}</b>',
             esc(e.balance_after), esc(describe(studio, e, lang))] for e in page.lines]
    headers = [t("history.when", lang), t("ledger.kind", lang), t("ledger.amount", lang), t("ledger.balance", lang),
               t("ledger.note", lang)]
    return top, table(headers, rows, elem_id="ledger-table")


def describe(studio: Studio, entry: ledger.LedgerLine, lang: str) -> str:
    """What a ledger row was for, in the user's language: the job's workflow and id for
    charges and refunds (and why it was refunded), the code, the welcome grant, or the
    administrator's own note."""
    note = entry.note or ""
    if entry.job_id:
        library, workflow = studio.backend.library, entry.workflow
        title = library.get(workflow).title.get(lang) if workflow and workflow in library else (workflow or "")
        text = t("ledger.job", lang, title=title, job=entry.job_id[:8])
        if entry.kind == "refund" and note in ("failed", "cancelled"):
            text += " · " + t(f"ledger.refund_{note}", lang)
        return text
    if note == "welcome":
        return t("ledger.welcome", lang)
    if entry.kind == "redeem" and note.startswith("code "):
        return t("ledger.code", lang, hint=note[len("code "):])
    if entry.actor:
        return t("ledger.by", lang, actor=entry.actor) + (f": {note}" if note else "")
    return note
