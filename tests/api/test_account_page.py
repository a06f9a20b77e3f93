"""The Account page's API tokens, in Chromium against the running studio."""

from __future__ import annotations

from backend.accounts import tokens
from tests.backend.helpers import PASSWORD

from .conftest import Api, Studio


def test_account_page_tokens(embedded: Studio, browser: object) -> None:
    """A token made on the Account page works on the API until it is revoked there."""
    api = embedded.user()
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        page.goto(embedded.url + "/login")
        page.fill("#name", api.name)
        page.fill("#password", PASSWORD)
        page.click("#signin")
        page.wait_for_selector("#balance", timeout=30_000)
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
