"""Where the browser matters: signing out from the header (a POST form now, not a link),
and changing the password on the Account page, which signs the user out everywhere."""

from __future__ import annotations

import re

import pytest

from tests.e2e.stack import wait_for
from tests.studio_process import StudioServer
from tests.studio.browsing import PASSWORD, WAIT, Pages, browser, sign_in, sign_up, unique  # noqa: F401

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
pytestmark = pytest.mark.browser


@pytest.fixture
def pages(browser, studio: StudioServer):  # type: ignore[no-untyped-def]  # noqa: F811
    """Pages on this module's studio, closed when the test ends (the sign-in forms are the point here)."""
    opened = Pages(browser, studio)
    yield opened
    opened.close()


def test_sign_out_from_the_header_is_a_post_that_ends_the_session(pages: Pages, studio: StudioServer) -> None:
    page = pages.blank()
    sign_up(page, studio, unique("out"))
    cookie = next(c for c in page.context.cookies() if c["name"] == "studio_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.click("#signout")
    expect(page).to_have_url(re.compile(r"/login"), timeout=WAIT)
    page.goto(studio.url + "/studio/account")
    expect(page).to_have_url(re.compile(r"/login\?next="), timeout=WAIT)


def test_changing_the_password_signs_out_everywhere(pages: Pages, studio: StudioServer) -> None:
    name = unique("pw")
    laptop, phone = pages.blank(), pages.blank()
    sign_up(laptop, studio, name)
    sign_in(phone, studio, name)
    laptop.goto(studio.url + "/studio/account")
    expect(laptop.locator("#signout-all")).to_be_visible(timeout=WAIT)
    laptop.locator("#current-password input, #current-password textarea").first.fill(PASSWORD)
    laptop.locator("#new-password input, #new-password textarea").first.fill("a brand new passphrase")
    laptop.locator("#new-password2 input, #new-password2 textarea").first.fill("a brand new passphrase")
    laptop.click("#change-password")
    expect(laptop.locator("#password-changed")).to_be_visible(timeout=WAIT)
    expect(laptop).to_have_url(re.compile(r"/login"), timeout=WAIT)  # taken to the sign-in page

    def phone_signed_out() -> bool:  # a replica may answer from its cache for a few seconds
        phone.goto(studio.url + "/studio/")
        return "/login?next=" in phone.url

    wait_for(phone_signed_out, 20, "the phone's session to end")
    sign_in(phone, studio, name, "a brand new passphrase")
