"""The Admin page's actions and redeeming on the Account page, through the pages' own
handlers (as the Gradio route calls them) on SQLite and PostgreSQL."""

from __future__ import annotations

import html as html_lib
import re

import gradio as gr
import pytest
from sqlalchemy import select

from backend import accounts
from backend.accounts import codes, ledger
from backend.db.models import LedgerEntry
from backend.errors import AuthError, InvalidParameter
from backend.runtime import Backend
from backend.accounts import app_settings
from backend.accounts.signin import sign_up
from tests.backend.helpers import CHEAP_HASHER, PASSWORD, make_user

from .helpers import Pages, studio_of

ADMIN = "root"


@pytest.fixture
def pages(backend: Backend) -> Pages:
    make_user(backend.db, ADMIN, role="admin")
    return Pages(studio_of(backend))


def ok(html: str) -> bool:
    return 'class="msg ok"' in html


def error_text(html: str) -> str:
    match = re.fullmatch(r'<div class="msg error">(.*)</div>', html)
    assert match, html
    return html_lib.unescape(match.group(1))


def user_row(backend: Backend, name: str):  # type: ignore[no-untyped-def]
    with backend.db.read() as s:
        return accounts.find_user(s, name)


def test_admin_creates_an_account_that_can_sign_in(backend: Backend, pages: Pages) -> None:
    app_settings.set_signup(backend.db, mode="open", welcome=7)
    note, users = pages.call("admin_create_user", ADMIN, "Newbie", "long enough pw", "creator")
    assert ok(note) and "<b>Newbie</b>" in users
    created = accounts.authenticate(backend.db, "newbie", "long enough pw", hasher=CHEAP_HASHER)
    assert (created.role, created.balance) == ("creator", 7)  # the welcome grant, through the ledger
    assert ledger.verify(backend.db) == []

    note, users = pages.call("admin_create_user", ADMIN, "boss", "long enough pw", "admin")
    assert ok(note) and user_row(backend, "boss").role == "admin"

    note, table = pages.call("admin_create_user", ADMIN, "NEWBIE", "long enough pw", "creator")
    assert "is taken" in error_text(note) and table == gr.skip()  # the users table stays as it was
    note, _ = pages.call("admin_create_user", ADMIN, "shorty", "short", "creator")
    assert "password" in error_text(note).lower()
    assert [u.name for u in accounts.list_users(backend.db)] == [ADMIN, "Newbie", "boss"]


def test_admin_disables_and_enables_an_account(backend: Backend, pages: Pages) -> None:
    make_user(backend.db, "cleo")
    sessions = pages.studio.sessions
    token = sessions.create(user_row(backend, "cleo").id)
    assert sessions.resolve(token).name == "cleo"  # resolved once: now cached

    note, users = pages.call("admin_disable", ADMIN, "cleo", 0, "")
    assert ok(note) and user_row(backend, "cleo").disabled
    assert sessions.resolve(token) is None  # signed out at once, not when the cache expires
    with pytest.raises(gr.Error, match="disabled"):
        pages.studio.user(gr.Request(username="cleo"))  # a page request of hers is refused
    with pytest.raises(AuthError, match="disabled"):
        accounts.authenticate(backend.db, "cleo", PASSWORD, hasher=CHEAP_HASHER)

    note, _ = pages.call("admin_enable", ADMIN, "cleo", 0, "")
    assert ok(note) and not user_row(backend, "cleo").disabled
    assert accounts.authenticate(backend.db, "cleo", PASSWORD, hasher=CHEAP_HASHER).name == "cleo"
    assert pages.studio.user(gr.Request(username="cleo")).name == "cleo"

    note, _ = pages.call("admin_disable", ADMIN, "nobody", 0, "")
    assert "No user named 'nobody'" in error_text(note)


def test_admin_grants_credits_in_the_ledger_with_their_name(backend: Backend, pages: Pages) -> None:
    dora = make_user(backend.db, "dora")
    note, users = pages.call("admin_grant", ADMIN, "dora", 40, "prize")
    assert ok(note)
    with backend.db.read() as s:
        (entry,) = s.scalars(select(LedgerEntry).where(LedgerEntry.user_id == dora.id))
    assert (entry.kind, entry.amount, entry.actor, entry.note) == ("grant", 40, ADMIN, "prize")
    note, _ = pages.call("admin_grant", ADMIN, "dora", 0, "")
    assert "positive" in error_text(note)
    assert user_row(backend, "dora").balance == 40


def test_admin_sets_the_sign_up_mode_and_welcome_grant(backend: Backend, pages: Pages) -> None:
    settings = backend.settings
    assert ok(pages.call("admin_signup", ADMIN, "invite", 3))
    assert (app_settings.signup_mode(backend.db, settings), app_settings.welcome_credits(backend.db, settings)) == (
        "invite", 3)
    with pytest.raises(InvalidParameter, match="needs an invite code"):
        sign_up(backend.db, settings, "eve", PASSWORD, address="203.0.113.9", hasher=CHEAP_HASHER)
    (code,) = codes.create_batch(backend.db, 1, 10).codes
    assert sign_up(backend.db, settings, "eve", PASSWORD, invite_code=code, address="203.0.113.9", hasher=CHEAP_HASHER)
    assert user_row(backend, "eve").balance == 13

    assert ok(pages.call("admin_signup", ADMIN, "off", 0))
    assert app_settings.signup_mode(backend.db, settings) == "off"
    assert "must be one of" in error_text(pages.call("admin_signup", ADMIN, "everyone", 0))
    assert "Welcome credits" in error_text(pages.call("admin_signup", ADMIN, "open", -1))
    assert app_settings.signup_mode(backend.db, settings) == "off"  # a refused change changes nothing


def test_redeem_on_the_account_page(backend: Backend, pages: Pages) -> None:
    fay = make_user(backend.db, "fay", credits=5)
    (code,) = codes.create_batch(backend.db, 1, 30).codes
    cleared, note, balance, rows, nav = pages.call("redeem", "fay", code.lower())
    assert cleared == "" and ok(note) and "30 credits added." in note
    assert "35 credits" in nav  # the header's balance moves with the page's
    assert '<div class="big-balance" id="balance-amount">35</div>' in balance
    assert "+30" in rows and f"code …{code[-4:]}" in rows

    _, note, balance, _, _ = pages.call("redeem", "fay", code)
    assert "already been used" in error_text(note) and 'id="balance-amount">35<' in balance
    for _ in range(backend.settings.redeem_max_failures - 1):  # the used code was the first failure
        assert "does not exist" in error_text(pages.call("redeem", "fay", "WRONG-CODE")[1])
    (fresh,) = codes.create_batch(backend.db, 1, 30).codes
    assert "Too many wrong codes" in error_text(pages.call("redeem", "fay", fresh)[1])
    with backend.db.read() as s:
        assert ledger.balance(s, fay.id) == 35
    assert ledger.verify(backend.db) == []
