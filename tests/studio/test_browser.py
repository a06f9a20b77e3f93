"""End-to-end in headless Chromium against a running studio (see conftest.running_studio).

Waits are bounded and check regular expressions; screenshots of the main pages go to
docs/screenshots/.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from backend import accounts, jobs
from backend.db.models import JobOutput
from backend.config import REPO_ROOT
from backend.submit import Accepted, submit
from tests.backend.helpers import CHEAP_HASHER

from .conftest import RunningStudio

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = REPO_ROOT / "docs" / "screenshots"
WAIT = 20_000
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def new_page(browser, studio: RunningStudio, locale: str = "en-US"):  # type: ignore[no-untyped-def]
    context = browser.new_context(locale=locale, viewport={"width": 1360, "height": 900})
    return context.new_page()


def sign_up(page, studio: RunningStudio, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(studio.url + "/signup")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#signup")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"), timeout=WAIT)


def sign_in(page, studio: RunningStudio, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(studio.url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("#signin")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"), timeout=WAIT)


def fill_prompt(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.click("#use-txt2img-sd15")
    page.locator("#txt2img-sd15-b-prompt textarea").fill(text)
    expect(page.locator("#price-txt2img-sd15")).to_contain_text(re.compile(r"Price: \d+ credits"), timeout=WAIT)


def wait_image(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function("s => {const i=document.querySelector(s); return i && i.complete && i.naturalWidth>0}",
                           arg=selector, timeout=WAIT)


def user_id(studio: RunningStudio, name: str) -> int:
    with studio.backend.db.read() as s:
        return accounts.find_user(s, name).id


def test_sign_up_create_watch_result_and_debit_then_draw_again(browser, running_studio: RunningStudio) -> None:
    page = new_page(browser, running_studio)
    page.goto(running_studio.url + "/studio/")
    page.screenshot(path=str(SHOTS / "signin.png"))
    sign_up(page, running_studio, "creator1")
    expect(page.locator("#balance")).to_contain_text("100")
    fill_prompt(page, "a lighthouse at sunset")
    page.click("#go-txt2img-sd15")
    expect(page.locator("#progress-card")).to_contain_text(re.compile(r"step \d+/\d+|Done|Waiting|Painting|Loading"),
                                                           timeout=WAIT)
    expect(page.locator("#progress-card")).to_have_attribute("data-state", "succeeded", timeout=WAIT)
    wait_image(page, "#shots .output img")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"9\d credits"), timeout=WAIT)  # the debit
    page.screenshot(path=str(SHOTS / "create.png"), full_page=True)

    page.click("#nav-history")
    expect(page.locator("#history-table")).to_contain_text("Done", timeout=WAIT)
    wait_image(page, "#history-table img")
    page.screenshot(path=str(SHOTS / "history.png"), full_page=True)
    page.locator("a.again").first.click()
    expect(page.locator("#txt2img-sd15-b-prompt textarea")).to_have_value("a lighthouse at sunset", timeout=WAIT)
    seed = page.locator("#txt2img-sd15-b-seed input").input_value()
    job = jobs.list_for_user(running_studio.backend.db, user_id(running_studio, "creator1"))[0]
    assert int(seed) == job.params["seed"]  # the same parameters, seed included


def test_failure_shows_the_reason_and_the_refund(browser, running_studio: RunningStudio) -> None:
    page = new_page(browser, running_studio)
    sign_up(page, running_studio, "creator2")
    fill_prompt(page, "please FAIL now")
    page.click("#go-txt2img-sd15")
    expect(page.locator("#progress-card")).to_have_attribute("data-state", "failed", timeout=WAIT)
    expect(page.locator("#failure")).to_contain_text("out of memory")
    expect(page.locator("#refund")).to_contain_text(re.compile(r"\d+ credits refunded"))
    page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)


def test_all_nodes_busy_asks_then_queues(browser, running_studio: RunningStudio) -> None:
    page = new_page(browser, running_studio)
    sign_up(page, running_studio, "creator3")
    uid = user_id(running_studio, "creator3")
    for _ in range(2):  # fill both slots of the only node with held jobs
        held = submit(running_studio.backend, uid, "txt2img-sd15", {"prompt": "HOLD"}, idempotency_key=uuid.uuid4().hex,
                      on_queued=running_studio.worker.wake)
        assert isinstance(held, Accepted)
    page.reload()
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"), timeout=WAIT)
    fill_prompt(page, "a queued fox")
    page.click("#go-txt2img-sd15")
    expect(page.locator("#busy-message")).to_contain_text(re.compile(r"about \d+ s"), timeout=WAIT)
    page.screenshot(path=str(SHOTS / "queue-confirm.png"), full_page=True)
    page.click("#queue-anyway-txt2img-sd15")
    expect(page.locator("#progress-card")).to_have_attribute("data-state", re.compile("queued|dispatched|submitted|running"),
                                                             timeout=WAIT)
    running_studio.node.release()
    expect(page.locator("#progress-card")).to_have_attribute("data-state", "succeeded", timeout=WAIT)


def test_admin_grants_credits_and_a_user_cannot_open_another_users_output(browser, running_studio: RunningStudio) -> None:
    db = running_studio.backend.db
    accounts.create_user(db, "boss", PASSWORD, role="admin", hasher=CHEAP_HASHER)
    accounts.create_user(db, "victim", PASSWORD, welcome_credits=5, hasher=CHEAP_HASHER)
    page = new_page(browser, running_studio)
    sign_in(page, running_studio, "boss")
    page.click("#nav-admin")
    expect(page.locator("#nodes-table")).to_contain_text("Simulated node", timeout=WAIT)
    page.screenshot(path=str(SHOTS / "admin.png"), full_page=True)
    page.get_by_role("tab", name="Users").click()
    page.locator("#admin-user input, #admin-user textarea").first.fill("victim")
    page.locator("#admin-credits input").fill("50")
    page.click("#admin-grant")
    expect(page.locator("#users-msg")).to_contain_text("Done", timeout=WAIT)
    with db.read() as s:
        assert accounts.find_user(s, "victim").balance == 55

    owner_jobs = [j.id for j in jobs.list_for_user(db, user_id(running_studio, "creator1"))]
    with db.read() as s:
        asset = s.scalars(select(JobOutput.asset_id).where(JobOutput.job_id.in_(owner_jobs))).first()
    assert asset
    intruder = new_page(browser, running_studio)
    sign_in(intruder, running_studio, "victim")
    assert intruder.request.get(f"{running_studio.url}/files/{asset}").status == 404
    assert page.request.get(f"{running_studio.url}/files/{asset}").status == 200  # admins may


def test_chinese_account_page_and_creators_see_no_admin(browser, running_studio: RunningStudio) -> None:
    accounts.create_user(running_studio.backend.db, "creator5", PASSWORD, welcome_credits=30, hasher=CHEAP_HASHER)
    page = new_page(browser, running_studio, locale="zh-CN")
    sign_in(page, running_studio, "creator5")
    expect(page.locator("#nav-create")).to_have_text("创作")
    expect(page.locator("#nav-admin")).to_have_count(0)
    page.goto(running_studio.url + "/studio/account")
    expect(page.locator("#ledger-table")).to_contain_text("赠送", timeout=WAIT)
    page.screenshot(path=str(SHOTS / "account-zh.png"), full_page=True)
    page.goto(running_studio.url + "/studio/admin")
    expect(page.locator("#admin-denied")).to_contain_text("仅限管理员", timeout=WAIT)
