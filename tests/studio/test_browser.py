"""End-to-end in headless Chromium against ``run_studio.py`` itself (see
``conftest.studio_server``): the real backend, worker, agent and the built-in simulated
ComfyUI node. Failures and holds are switched on in the simulator over HTTP
(``/sim/faults``); nothing of ours is replaced.

Waits are bounded and check regular expressions. Screenshots of the main pages are taken
once every ``<img>`` on the page has loaded, into a temporary folder; to refresh the ones
in the docs run ``STUDIO_SCREENSHOTS=docs/screenshots make test ARGS="tests/studio -m browser"``.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.e2e.stack import png_bytes

from .conftest import ADMIN_NAME, ADMIN_PASSWORD, StudioServer

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS") or Path(tempfile.gettempdir()) / "studio-screenshots")
WAIT = 20_000
JOB_WAIT = 45_000
PASSWORD = "correct horse battery"
ACTIVE = re.compile(r"queued|dispatched|submitted|running")

# Records what the progress card showed while a job ran (a short stage or step count
# can come and go between two polls of a Playwright expectation).
WATCH_CARD = """() => {
  window.__cards = [];
  const seen = () => {
    const card = document.querySelector('#progress-card');
    if (!card) return;
    const preview = card.querySelector('.shot.preview img');
    window.__cards.push({state: card.dataset.state, job: card.dataset.job, text: card.innerText,
                         preview: preview ? preview.getAttribute('src') : null});
  };
  new MutationObserver(seen).observe(document.querySelector('#progress'), {subtree: true, childList: true,
                                                                          characterData: true, attributes: true});
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(autouse=True)
def no_faults(studio_server: StudioServer) -> Iterator[None]:
    studio_server.reset_faults()
    yield
    studio_server.reset_faults()


def new_page(browser, locale: str = "en-US"):  # type: ignore[no-untyped-def]
    context = browser.new_context(locale=locale, viewport={"width": 1360, "height": 900})
    return context.new_page()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def sign_up(page, server: StudioServer, name: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/signup")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#signup")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"), timeout=WAIT)


def sign_in(page, server: StudioServer, name: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#signin")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"), timeout=WAIT)


def choose(page, workflow: str) -> None:  # type: ignore[no-untyped-def]
    page.click(f"#use-{workflow}")
    expect(page.locator(f"#form-{workflow}")).to_be_visible(timeout=WAIT)


def fill_prompt(page, text: str, price: str = r"Price: \d+ credits") -> None:  # type: ignore[no-untyped-def]
    choose(page, "txt2img-sd15")
    page.locator("#b-prompt textarea").fill(text)
    expect(page.locator("#price-line")).to_contain_text(re.compile(price), timeout=WAIT)


def current_job(page) -> str | None:  # type: ignore[no-untyped-def]
    card = page.locator("#progress-card")
    return card.get_attribute("data-job") if card.count() else None


def create(page, *, button: str = "#go") -> str:  # type: ignore[no-untyped-def]
    """Click Create (or Queue anyway); the id of the job the card then shows."""
    before = current_job(page)
    page.click(button)
    handle = page.wait_for_function(
        """b => { const c = document.querySelector('#progress-card');
                  return c && c.dataset.job && c.dataset.job !== b ? c.dataset.job : null; }""",
        arg=before or "", timeout=WAIT)
    return handle.json_value()


def wait_state(page, job: str, state: str | re.Pattern, timeout: int = JOB_WAIT) -> None:  # type: ignore[no-untyped-def]
    expect(page.locator(f"#progress-card[data-job='{job}']")).to_have_attribute("data-state", state, timeout=timeout)


def balance(page) -> int:  # type: ignore[no-untyped-def]
    return int(re.search(r"\d+", page.locator("#balance").inner_text()).group())


def images_loaded(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)", timeout=WAIT)


def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    images_loaded(page)
    page.wait_for_timeout(300)  # let transitions (progress bar, fades) settle
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def output_src(page) -> str:  # type: ignore[no-untyped-def]
    img = page.locator("#shots .output img").first
    expect(img).to_have_attribute("src", re.compile(r"^/files/[0-9a-f]{64}$"), timeout=WAIT)
    page.wait_for_function("s => {const i=document.querySelector(s); return i && i.complete && i.naturalWidth>0}",
                           arg="#shots .output img", timeout=WAIT)
    return img.get_attribute("src")


def until(done, step, what: str, timeout: float = 45.0) -> None:  # type: ignore[no-untyped-def]
    """Repeat ``step`` (e.g. a Refresh click) until ``done()``, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        step()
        time.sleep(0.5)


def pixels(page, src: str) -> bytes:  # type: ignore[no-untyped-def]
    """The decoded pixels of an output (PNG metadata names the job, so files differ)."""
    response = page.request.get(page.url.split("/studio")[0] + src)
    assert response.status == 200
    return Image.open(io.BytesIO(response.body())).convert("RGB").tobytes()


def draw_stroke(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    """One brush stroke across the middle of an ImageEditor canvas."""
    canvas = page.locator(f"{selector} canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2 - 30
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, 13):
        page.mouse.move(x + i * 10, y + i * 5, steps=4)
        page.wait_for_timeout(20)
    page.mouse.up()


def test_sign_up_create_watch_progress_see_the_image_and_the_debit_then_draw_again(browser, studio_server) -> None:
    page = new_page(browser)
    page.goto(studio_server.url + "/studio/")
    expect(page.locator("#signin")).to_be_visible(timeout=WAIT)
    shot(page, "signin.png")
    sign_up(page, studio_server, unique("creator"))
    expect(page.locator("#balance")).to_contain_text("100 credits")
    fill_prompt(page, "a lighthouse at sunset")
    expect(page.locator("#tab-beginner-button, [role=tab][aria-selected=true]").first).to_contain_text("Beginner")
    page.evaluate(WATCH_CARD)
    job = create(page)
    wait_state(page, job, "succeeded")
    first = output_src(page)
    expect(page.locator("#balance")).to_contain_text("98 credits", timeout=WAIT)  # the debit, shown at once
    expect(page.locator("#progress-meta")).to_contain_text("2 credits")
    seen = page.evaluate("window.__cards")
    texts = "\n".join(c["text"] for c in seen if c["job"] == job)
    assert re.search(r"step \d+/\d+", texts), texts  # the step count
    assert re.search(r"about \d+ s left", texts), texts  # the ETA
    assert re.search(r"Sampling|Painting|Decoding|Loading|Encoding", texts, re.IGNORECASE), texts  # a stage alias
    assert any(c["preview"] for c in seen if c["job"] == job), "no preview was shown"
    shot(page, "create.png")

    page.click("#nav-history")
    expect(page.locator("#history-table")).to_contain_text("Done", timeout=WAIT)
    shot(page, "history.png")
    page.locator(f"#again-{job}").click()
    expect(page.locator("#form-txt2img-sd15")).to_be_visible(timeout=WAIT)
    expect(page.locator("#b-prompt textarea")).to_have_value("a lighthouse at sunset", timeout=WAIT)
    seed = page.locator("#b-seed input").input_value()
    assert int(seed) >= 0  # the seed the job ran with, not "-1 = random"
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: 2 credits"), timeout=WAIT)
    again = create(page)
    wait_state(page, again, "succeeded")
    second = output_src(page)
    assert second != first and pixels(page, second) == pixels(page, first)  # same parameters and seed: same picture
    expect(page.locator("#balance")).to_contain_text("96 credits", timeout=WAIT)


def test_all_nodes_busy_asks_then_queues_and_a_queued_job_can_be_cancelled(browser, studio_server) -> None:
    page = new_page(browser)
    sign_up(page, studio_server, unique("busy"))
    fill_prompt(page, "a held fox")
    studio_server.faults(hang_in_node="KSampler")  # the node's jobs stop in the sampler until released
    held = [create(page), create(page)]  # one running + one waiting in ComfyUI: the only node is full
    wait_state(page, held[-1], ACTIVE)
    page.click("#go")
    expect(page.locator("#busy-message")).to_contain_text(re.compile(r"busy.*about \d+ s", re.IGNORECASE), timeout=WAIT)
    expect(page.locator("#queue-anyway")).to_be_visible()
    shot(page, "queue-confirm.png")
    queued = create(page, button="#queue-anyway")
    wait_state(page, queued, "queued")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("#balance")).to_contain_text("94 credits", timeout=WAIT)  # three jobs of 2 credits
    page.click("#cancel")
    wait_state(page, queued, "cancelled")
    expect(page.locator("#refund")).to_contain_text(re.compile(r"2 credits refunded"), timeout=WAIT)
    expect(page.locator("#balance")).to_contain_text("96 credits", timeout=WAIT)
    studio_server.reset_faults()  # release the held jobs: both finish
    page.click("#nav-history")
    expect(page.locator("#history-table")).to_contain_text("Cancelled", timeout=WAIT)
    until(lambda: page.locator("#history-table .pill.succeeded").count() == 2,
          lambda: page.click("#history-refresh"), "the two held jobs to finish")


def test_a_failure_shows_the_reason_and_the_refund(browser, studio_server) -> None:
    page = new_page(browser)
    sign_up(page, studio_server, unique("unlucky"))
    fill_prompt(page, "a doomed painting")
    studio_server.faults(raise_in_node="KSampler")
    job = create(page)
    wait_state(page, job, "failed")
    expect(page.locator("#failure")).to_contain_text(re.compile(r"\w+"))
    expect(page.locator("#refund")).to_contain_text("2 credits refunded")
    expect(page.locator("#balance")).to_contain_text("100 credits", timeout=WAIT)  # debited, then refunded
    shot(page, "failure.png")


def test_inpainting_with_a_mask_drawn_in_the_browser_then_drawn_again_from_the_stored_inputs(
        browser, studio_server, tmp_path: Path) -> None:
    picture = tmp_path / "lake.png"
    picture.write_bytes(png_bytes(320, 240, (30, 140, 200)))
    page = new_page(browser)
    sign_up(page, studio_server, unique("painter"))
    choose(page, "inpaint-sd15")
    expect(page.locator("#price-line")).to_contain_text("Upload Picture", timeout=WAIT)
    page.locator("#in-image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#price-line")).to_contain_text("Upload Area to repaint", timeout=WAIT)
    expect(page.locator("#in-mask canvas").first).to_be_visible(timeout=WAIT)
    page.locator("#b-prompt textarea").fill("a red boat")
    draw_stroke(page, "#in-mask")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: \d+ credits"), timeout=WAIT)
    job = create(page)
    wait_state(page, job, "succeeded")
    first = output_src(page)
    shot(page, "inpaint.png")

    page.goto(f"{studio_server.url}/studio/?again={job}")  # what History's "draw again" link opens
    expect(page.locator("#form-inpaint-sd15")).to_be_visible(timeout=WAIT)
    expect(page.locator("#stored-image img")).to_be_visible(timeout=WAIT)  # the stored picture, no upload
    expect(page.locator("#stored-mask")).to_be_visible()
    expect(page.locator("#b-prompt textarea")).to_have_value("a red boat")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: \d+ credits"), timeout=WAIT)
    again = create(page)
    wait_state(page, again, "succeeded")
    assert pixels(page, output_src(page)) == pixels(page, first)  # same picture, mask and seed: same result


def test_admin_grants_credits_and_a_user_cannot_open_another_users_output(browser, studio_server) -> None:
    owner, other = new_page(browser), new_page(browser)
    owner_name, other_name = unique("owner"), unique("other")
    sign_up(owner, studio_server, owner_name)
    sign_up(other, studio_server, other_name)
    fill_prompt(owner, "a private picture")
    job = create(owner)
    wait_state(owner, job, "succeeded")
    src = output_src(owner)
    assert owner.request.get(studio_server.url + src).status == 200
    assert other.request.get(studio_server.url + src).status == 404  # not yours: same answer as missing
    assert requests.get(studio_server.url + src, timeout=5).status_code == 404  # signed out

    admin = new_page(browser)
    sign_in(admin, studio_server, ADMIN_NAME, ADMIN_PASSWORD)
    admin.click("#nav-admin")
    expect(admin.locator("#nodes-table")).to_contain_text(re.compile(r"simulated", re.IGNORECASE), timeout=WAIT)
    expect(admin.locator("#nodes-table")).to_contain_text("online")
    shot(admin, "admin.png")
    admin.get_by_role("tab", name="Users").click()
    admin.locator("#admin-user textarea, #admin-user input").first.fill(other_name)
    admin.locator("#admin-credits input").fill("50")
    admin.click("#admin-grant")
    expect(admin.locator("#users-msg")).to_contain_text("Done", timeout=WAIT)
    row = admin.locator("#users-table tr", has_text=other_name)
    expect(row).to_contain_text("150", timeout=WAIT)
    assert admin.request.get(studio_server.url + src).status == 200  # administrators may open any file
    other.reload()
    expect(other.locator("#balance")).to_contain_text("150 credits", timeout=WAIT)


def test_the_chinese_ui(browser, studio_server) -> None:
    page = new_page(browser, locale="zh-CN")
    sign_up(page, studio_server, unique("zh"))
    expect(page.locator("#nav-create")).to_have_text("创作")
    expect(page.locator("#nav-admin")).to_have_count(0)
    choose(page, "txt2img-sd15")
    expect(page.locator("#form-txt2img-sd15")).to_contain_text("新手")
    expect(page.locator("#form-txt2img-sd15")).to_contain_text("提示词")
    page.locator("#b-prompt textarea").fill("夕阳下的灯塔")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"价格: \d+ 积分"), timeout=WAIT)
    job = create(page)
    wait_state(page, job, "succeeded")
    expect(page.locator("#progress-card")).to_contain_text("已完成")
    output_src(page)
    shot(page, "create-zh.png")
    page.goto(studio_server.url + "/studio/account")
    expect(page.locator("#ledger-table")).to_contain_text("赠送", timeout=WAIT)
    expect(page.locator("#ledger-table")).to_contain_text("任务扣费")
    shot(page, "account-zh.png")
    page.goto(studio_server.url + "/studio/admin")
    expect(page.locator("#admin-denied")).to_contain_text("仅限管理员", timeout=WAIT)

    admin = new_page(browser, locale="zh-CN")
    sign_in(admin, studio_server, ADMIN_NAME, ADMIN_PASSWORD)
    admin.goto(studio_server.url + "/studio/admin")
    header = admin.locator("#nodes-table thead")
    expect(header).to_contain_text("节点", timeout=WAIT)
    expect(header).to_contain_text("空闲显存")
    expect(admin.locator("#nodes-table")).to_contain_text("模拟节点")
