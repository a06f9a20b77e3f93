"""The studio's pages for the API, in Chromium against the running studio: tokens on the
Account page, per-user limits on the Admin page."""

from __future__ import annotations

from typing import Any

from backend.accounts import tokens
from tests.backend.helpers import PASSWORD

from .conftest import Api, Studio


def sign_in(page: Any, studio: Studio, name: str) -> None:
    page.goto(studio.url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#signin")
    page.wait_for_selector("#balance", timeout=30_000)


def test_account_page_tokens(embedded: Studio, browser: object) -> None:
    """A token made on the Account page works on the API until it is revoked there."""
    api = embedded.user()
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        sign_in(page, embedded, api.name)
        page.goto(embedded.url + "/studio/account")
        page.wait_for_selector("#token-table", timeout=30_000)  # the test's own token
        page.fill("#token-name textarea, #token-name input", "shop bot")
        page.click("#token-create")
        secret = page.wait_for_selector("#token-secret", timeout=30_000).inner_text()
        made = Api(embedded.url, secret)
        assert made.get("/v1/balance").status_code == 200
        token_id = next(r.id for r in tokens.list_for_user(embedded.db, tokens.resolve(embedded.db, secret).user_id)
                        if r.name == "shop bot")
        page.fill("#token-revoke-id textarea, #token-revoke-id input", str(token_id))
        page.click("#token-revoke")
        page.wait_for_function("() => document.querySelector('#token-result').innerText.includes('revoked')",
                               timeout=30_000)
    finally:
        page.close()
    assert made.get("/v1/balance").status_code == 401


def test_admin_page_limits(embedded: Studio, browser: object) -> None:
    """An override set on the Admin page is the limit the API enforces."""
    boss, creator = embedded.user(role="admin", scope="admin"), embedded.user()
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        sign_in(page, embedded, boss.name)
        page.goto(embedded.url + "/studio/admin")
        page.get_by_role("tab", name="Limits").click()
        page.fill("#limits-user textarea, #limits-user input", creator.name)
        # Pick the option itself: typing and pressing Enter raced the options' filtering
        # and now and then set the first limit of the list instead.
        page.locator("#limits-name input").click()
        page.get_by_role("option", name="submits_per_minute", exact=True).click()
        page.fill("#limits-value textarea, #limits-value input", "1")
        page.click("#limits-set")
        row = page.locator("#limits-table tr", has_text="submits_per_minute")
        row.wait_for(timeout=30_000)
        assert row.locator("td").last.inner_text().strip() == "1"  # the override column
    finally:
        page.close()
    me = next(u for u in boss.get("/v1/admin/users").json()["users"] if u["name"] == creator.name)
    assert me["limits"]["submits_per_minute"] == 1
    asset = creator.upload()
    body = {"workflow": "invert-scale", "params": {"image": asset}, "queue_if_busy": True}
    assert creator.submit(body).status_code == 201
    assert creator.submit(body).status_code == 429
