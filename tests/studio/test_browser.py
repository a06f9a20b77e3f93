"""End-to-end in headless Chromium against ``run_studio.py`` itself (see
``conftest.studio_server``): the real backend, worker, agent and the built-in simulated
ComfyUI node. Failures and holds are switched on in the simulator over HTTP
(``/sim/faults``); nothing of ours is replaced.

The suite uses the studio as a person does: every workflow of the library is opened,
one control of each kind it has (slider, number box, dropdown, preset radio, text box,
seed, picture upload, drawn mask) is changed through the page, the job is created, and
the parameters the *database* stored for it are compared with what was set; each
result is checked in the element for its kind (a loaded ``<img>``, an ``<audio>`` or
``<video>`` with a duration). Both languages are checked on every form from a browser
of the other locale.

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

from backend import jobs
from backend.db import Database
from backend.workflows import Library, Param, WorkflowSpec
from studio.i18n import t
from studio.widgets import MAX_SLIDER_SPAN
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
                         fraction: card.dataset.fraction, preview: preview ? preview.getAttribute('src') : null});
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
    page.locator("#p-prompt textarea").fill(text)
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


# ---- driving the form as a person does ----------------------------------------------

def control_kind(param: Param) -> str:
    """Which control the form shows for a parameter (studio/widgets.py)."""
    if param.type == "seed":
        return "seed"
    if param.type in ("int", "float"):
        small = param.min is not None and param.max is not None and param.max - param.min <= MAX_SLIDER_SPAN
        return "slider" if small else "number"
    return {"choice": "dropdown", "bool": "checkbox", "string": "textbox", "text": "textbox"}.get(param.type, param.type)


def changed_value(param: Param) -> object:
    """A valid value other than the default, small enough for a quick job."""
    if param.type == "seed":
        return 4242
    if param.type in ("int", "float"):
        step = param.step or (1 if param.type == "int" else 0.01)
        low = param.min if param.min is not None else 0
        value = low + step if low + step != param.default else low + 2 * step
        return int(value) if param.type == "int" else round(value, 6)
    if param.type == "choice":
        options = list(param.options)
        return options[(options.index(param.default) + 1) % len(options)]
    return f"a test of {param.name}"


def set_control(page, param: Param, value: object) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(f"#p-{param.name}")
    box.scroll_into_view_if_needed()
    kind = control_kind(param)
    if kind in ("slider", "number", "seed"):
        field = box.locator("input[type=number]").first
        field.fill(str(value))
        field.press("Tab")
    elif kind == "dropdown":
        box.locator("input").first.click()
        page.get_by_role("option", name=str(value), exact=True).click()
    elif kind == "checkbox":
        box.locator("input[type=checkbox]").set_checked(bool(value))
    else:
        box.locator("textarea, input").first.fill(str(value))


def open_tab(page, tab: str) -> None:  # type: ignore[no-untyped-def]
    page.locator("#mode-tabs").get_by_role("tab", name=tab).click()


def show(page, param: Param) -> None:  # type: ignore[no-untyped-def]
    """Expert fields sit in the Expert tab; beginner ones are always visible."""
    if not param.beginner:
        open_tab(page, "Expert")


def upload_inputs(page, spec: WorkflowSpec, folder: Path) -> None:  # type: ignore[no-untyped-def]
    for i, param in enumerate(p for p in spec.file_params if p.type == "image"):
        picture = folder / f"{spec.name}-{param.name}.png"
        picture.write_bytes(png_bytes(576, 576, (40 + 60 * i, 140, 200)))  # room for the default crop
        page.locator(f"#in-{param.name} input[type=file]").set_input_files(str(picture))
        expect(page.locator("#price-line")).not_to_contain_text(f"Upload {param.label.en} ", timeout=WAIT)
    for param in (p for p in spec.file_params if p.type == "mask"):
        expect(page.locator(f"#in-{param.name} canvas").first).to_be_visible(timeout=WAIT)
        page.wait_for_timeout(300)
        draw_stroke(page, f"#in-{param.name}")


def loaded(page, kind: str) -> float:  # type: ignore[no-untyped-def]
    """Waits until the result is shown by the element for its kind and has loaded; returns
    the picture's natural width or the player's duration."""
    selector = {"image": "#shots .output img", "audio": "#shots .output audio", "video": "#shots .output video"}[kind]
    expect(page.locator(selector).first).to_be_attached(timeout=WAIT)
    measure = {"image": "e.complete && e.naturalWidth", "audio": "e.duration", "video": "e.videoWidth && e.duration"}[kind]
    return page.wait_for_function(
        f"s => {{ const e = document.querySelector(s); const v = e && ({measure}); return v > 0 && isFinite(v) ? v : null; }}",
        arg=selector, timeout=JOB_WAIT).json_value()


def disabled_controls(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.evaluate("""() => Array.from(document.querySelectorAll(
        '[id^=p-] input, [id^=p-] textarea, [id^=preset-] input, #go, [id^=new-]'))
        .filter(e => e.disabled).map(e => e.closest('[id]').id)""")


@pytest.fixture(scope="module")
def stored(studio_server: StudioServer) -> Iterator[Database]:
    """The studio's own database, read as the truth of what a job was given."""
    db = Database(f"sqlite:///{(studio_server.data_dir / 'studio.db').resolve()}")
    yield db
    db.engine.dispose()


def test_every_control_of_every_workflow_reaches_the_job_and_every_result_plays(
        browser, studio_server, library: Library, stored: Database, tmp_path: Path) -> None:
    page = new_page(browser)
    name = unique("tour")
    sign_up(page, studio_server, name)
    expect(page.locator("#form-txt2img-sd15")).to_be_visible(timeout=WAIT)  # the landing workflow
    admin = new_page(browser)  # enough credits for the tour, through the admin page
    sign_in(admin, studio_server, ADMIN_NAME, ADMIN_PASSWORD)
    admin.goto(studio_server.url + "/studio/admin")
    admin.get_by_role("tab", name="Users").click()
    admin.locator("#admin-user textarea, #admin-user input").first.fill(name)
    admin.locator("#admin-credits input").fill("900")
    admin.click("#admin-grant")
    expect(page.locator("#balance")).to_contain_text("1000 credits", timeout=WAIT)  # no reload: the header follows
    kinds_seen: dict[str, set[str]] = {}
    for spec in library:
        choose(page, spec.name)
        assert disabled_controls(page) == [], spec.name
        upload_inputs(page, spec, tmp_path)
        expected: dict[str, object] = {}
        by_preset = {n for preset in spec.presets for option in preset.options for n in option.values}
        for preset in spec.presets:  # a beginner's choice, e.g. "Widescreen"
            option = next(o for o in preset.options if o.name != preset.default)
            open_tab(page, "Beginner")
            page.locator(f"#preset-{preset.name}").get_by_label(option.label.en, exact=True).check()
            expected[preset.name] = option.name
            expected.update(option.values)
            kinds_seen.setdefault("radio", set()).add(spec.name)
        for param in spec.params:
            kind = control_kind(param)
            if param.type in ("image", "mask") or param.name in by_preset or kind in kinds_seen.get(spec.name, set()):
                continue
            kinds_seen.setdefault(spec.name, set()).add(kind)
            kinds_seen.setdefault(kind, set()).add(spec.name)
            show(page, param)
            expected[param.name] = changed_value(param)
            set_control(page, param, expected[param.name])
        for param in spec.params:  # a required text must be written
            if param.required and param.type in ("text", "string") and param.name not in expected:
                expected[param.name] = "a test"
                show(page, param)
                set_control(page, param, "a test")
        expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: \d+ credits"), timeout=WAIT)
        expect(page.locator("#price-line .msg"), f"{spec.name}: {page.locator('#price-line').inner_text()}").to_have_count(0)  # no guard, no error
        job = create(page)
        wait_state(page, job, "succeeded")
        for output in spec.outputs:
            assert loaded(page, output.kind) > 0, (spec.name, output.kind)
            kinds_seen.setdefault("output-" + output.kind, set()).add(spec.name)
        params = jobs.get(stored, job).params
        for key, value in expected.items():
            assert params[key] == pytest.approx(value) if isinstance(value, float) else params[key] == value, \
                (spec.name, key, params[key], value)
    # Every kind of control and result the library has was used at least once.
    assert {"slider", "number", "dropdown", "radio", "textbox", "seed"} <= set(kinds_seen), kinds_seen.keys()
    assert {"output-image", "output-audio", "output-video"} <= set(kinds_seen)

    page.click("#nav-history")  # the right element per kind in History too
    expect(page.locator("#history-table")).to_be_visible(timeout=WAIT)
    for kind in ("img", "audio", "video"):
        expect(page.locator(f"#history-table .thumbs {kind}").first).to_be_attached(timeout=WAIT)
    assert page.locator("#history-table .thumbs img[src*='.flac'], #history-table .thumbs img.audio").count() == 0
    page.wait_for_function("() => Array.from(document.querySelectorAll('#history-table audio')).every(a => a.duration > 0)",
                           timeout=WAIT)
    page.click("#nav-account")  # what each ledger row was for
    expect(page.locator("#ledger-table")).to_contain_text("Make music (ACE-Step) · job", timeout=WAIT)
    expect(page.locator("#ledger-table")).to_contain_text("Welcome credits")
    expect(page.locator("#ledger-table")).to_contain_text(f"From {ADMIN_NAME}")


def test_create_watch_progress_beginner_and_expert_are_one_form_then_draw_again_with_a_new_seed(
        browser, studio_server, stored: Database) -> None:
    page = new_page(browser)
    page.goto(studio_server.url + "/studio/")
    expect(page.locator("#signin")).to_be_visible(timeout=WAIT)
    shot(page, "signin.png")
    sign_up(page, studio_server, unique("creator"))
    expect(page.locator("#balance")).to_contain_text("100 credits")
    choose(page, "txt2img-sd15")
    # Before typing: the price and a hint, no red "required" (and never the field key).
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: 2 credits.*Fill in “Prompt”", re.S))
    expect(page.locator("#form-error, #notice .msg")).to_have_count(0)
    page.locator("#p-prompt textarea").fill("   ")
    page.click("#go")  # blanks are no prompt: refused, not charged
    expect(page.locator("#rejection")).to_have_text("Prompt is required", timeout=WAIT)
    expect(page.locator("#balance")).to_contain_text("100 credits")
    page.locator("#p-prompt textarea").fill("a lighthouse at sunset")
    page.locator("#preset-aspect").get_by_label("Widescreen 16:9", exact=True).check()
    open_tab(page, "Expert")  # the same values, seen in full: nothing typed is lost
    expect(page.locator("#p-prompt textarea")).to_have_value("a lighthouse at sunset")
    expect(page.locator("#p-width input[type=number]")).to_have_value("912")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: 4 credits"), timeout=WAIT)
    expect(page.locator("#price-line .msg")).to_have_count(0)
    page.locator("#p-width input[type=number]").fill("512")
    page.locator("#p-width input[type=number]").press("Tab")
    open_tab(page, "Beginner")  # 512x512 is no longer "Widescreen": the choice is cleared
    expect(page.locator("#preset-aspect input:checked")).to_have_count(0)
    page.evaluate(WATCH_CARD)
    job = create(page)
    wait_state(page, job, "succeeded")
    first = output_src(page)
    expect(page.locator("#balance")).to_contain_text("98 credits", timeout=WAIT)  # the debit, shown at once
    seen = [c for c in page.evaluate("window.__cards") if c["job"] == job]
    running = [c for c in seen if c["state"] == "running"]
    fractions = [float(c["fraction"]) for c in seen]
    assert fractions == sorted(fractions), fractions  # the bar never goes back
    sampling = [(c["text"], float(c["fraction"])) for c in running if re.search(r"Painting.*step \d+/\d+", c["text"], re.S)]
    assert sampling, [c["text"] for c in running]
    steps = [(int(m.group(1)), int(m.group(2)), f) for text, f in sampling
             if (m := re.search(r"step (\d+)/(\d+)", text))]
    early = [f for value, total, f in steps if value <= total / 4]
    late = [f for value, total, f in steps if value >= total * 3 / 4]
    assert early and max(early) < 0.45 and late and min(late) > 0.6, steps  # sampling is most of the bar
    assert any(re.search(r"about \d+ s left", c["text"]) for c in running), [c["text"] for c in running]
    assert any(c["preview"] for c in seen), "no preview was shown"
    assert jobs.get(stored, job).params["width"] == 512  # the hand-set value, not the preset's
    shot(page, "create.png")

    page.click("#nav-history")
    expect(page.locator("#history-table")).to_contain_text("a lighthouse at sunset", timeout=WAIT)  # the prompt
    shot(page, "history.png")
    page.locator(f"#open-{job}").click()  # the job view: prompt, parameters, full-size result
    expect(page.locator("#job-prompt")).to_have_text("a lighthouse at sunset", timeout=WAIT)
    expect(page.locator("#job-params")).to_contain_text("Sampler")
    images_loaded(page)
    page.locator(f"#job-{job} #again-{job}").click()
    expect(page.locator("#form-txt2img-sd15")).to_be_visible(timeout=WAIT)
    expect(page.locator("#p-prompt textarea")).to_have_value("a lighthouse at sunset", timeout=WAIT)
    seed = int(page.locator("#p-seed input").input_value())
    assert seed >= 0  # the seed the job ran with, not "-1 = random"
    again = create(page)
    wait_state(page, again, "succeeded")
    second = output_src(page)
    assert second != first and pixels(page, second) == pixels(page, first)  # same parameters and seed: same picture
    page.click("#new-seed")  # draw again, but different
    expect(page.locator("#p-seed input")).to_have_value("-1")
    varied = create(page)
    wait_state(page, varied, "succeeded")
    assert jobs.get(stored, varied).params["seed"] != seed
    assert pixels(page, output_src(page)) != pixels(page, first)
    expect(page.locator("#balance")).to_contain_text("94 credits", timeout=WAIT)  # three jobs of 2
    page.goto(studio_server.url + "/studio/")  # the page opens on what this user makes most
    expect(page.locator("#form-txt2img-sd15")).to_be_visible(timeout=WAIT)


def test_use_this_workflow_brings_the_form_into_view_on_a_phone(browser, studio_server) -> None:
    context = browser.new_context(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    sign_up(page, studio_server, unique("phone"))
    expect(page.locator("#form-txt2img-sd15")).to_be_visible(timeout=WAIT)
    form_top = page.locator("#form-area").bounding_box()["y"]
    assert form_top < 2 * 844, form_top  # one row of cards, not 19, above the form
    page.locator("#use-music-ace-step").scroll_into_view_if_needed()
    page.click("#use-music-ace-step")
    expect(page.locator("#form-music-ace-step")).to_be_in_viewport(timeout=WAIT)
    context.close()


def test_all_nodes_busy_asks_then_queues_shows_the_place_and_a_queued_job_can_be_cancelled(browser, studio_server) -> None:
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
    # Its place and wait, not a step countdown.
    expect(page.locator("#progress-meta")).to_contain_text(re.compile(r"0 jobs ahead · about \d+ s wait"), timeout=WAIT)
    expect(page.locator("#progress-meta")).not_to_contain_text("left")
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
    page.click("#nav-account")
    expect(page.locator("#ledger-table")).to_contain_text("Text to image (SD 1.5) · job", timeout=WAIT)
    expect(page.locator("#ledger-table")).to_contain_text("cancelled")


def test_a_failure_shows_the_reason_and_the_refund(browser, studio_server) -> None:
    page = new_page(browser)
    sign_up(page, studio_server, unique("unlucky"))
    fill_prompt(page, "a doomed painting")
    studio_server.faults(raise_in_node="KSampler")
    job = create(page)
    wait_state(page, job, "failed")
    expect(page.locator("#failure")).to_contain_text("The job failed during “Painting”: InjectedFault")
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
    page.locator("#p-prompt textarea").fill("a red boat")
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
    expect(page.locator("#p-prompt textarea")).to_have_value("a red boat")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: \d+ credits"), timeout=WAIT)
    again = create(page)
    wait_state(page, again, "succeeded")
    assert pixels(page, output_src(page)) == pixels(page, first)  # same picture, mask and seed: same result


def test_admin_units_codes_and_a_user_cannot_open_another_users_output(browser, studio_server) -> None:
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
    expect(admin.locator("#nodes-table thead")).to_contain_text("Speed (s per estimated s)")  # a unit
    expect(admin.locator("#nodes-table")).to_contain_text(re.compile(r"\d\.\d\d \(\d+\.\d× the estimate's pace\)"))
    shot(admin, "admin.png")
    assert admin.request.get(studio_server.url + src).status == 200  # administrators may open any file
    admin.get_by_role("tab", name="Redeem codes").click()
    admin.locator("#make-codes").click()
    expect(admin.locator("#new-codes textarea")).to_have_value(re.compile(r"\w{4}-"), timeout=WAIT)
    code = admin.locator("#new-codes textarea").input_value().splitlines()[0]
    other.goto(studio_server.url + "/studio/account")
    # The page's own load events first: a header rendered by a late load would show the
    # balance from before the redeem.
    expect(other.locator("#balance")).to_contain_text("100 credits", timeout=WAIT)
    expect(other.locator("#account-balance")).to_contain_text("100", timeout=WAIT)
    other.locator("#redeem-code textarea, #redeem-code input").first.fill(code)
    other.click("#redeem")
    expect(other.locator("#redeem-result")).to_contain_text("100 credits added", timeout=WAIT)
    expect(other.locator("#balance")).to_contain_text("200 credits")  # the header, without a reload
    expect(other.locator("#ledger-table")).to_contain_text("Redeem code …")


def form_texts(spec: WorkflowSpec, lang: str) -> list[str]:
    """What a form must show in ``lang``: title, every label, the tabs and the button."""
    texts = [spec.title.get(lang)] + [p.label.get(lang) for p in spec.params] + [p.label.get(lang) for p in spec.presets]
    return texts + [t(k, lang) for k in ("create.beginner", "create.expert", "create.go")]


@pytest.mark.parametrize(("browser_locale", "chosen"), [("en-US", "zh"), ("zh-CN", "en")])
def test_the_chosen_language_renders_every_form_and_follows_the_account(browser, studio_server, library: Library,
                                                                          browser_locale: str, chosen: str) -> None:
    page = new_page(browser, locale=browser_locale)
    name = unique("lang")
    sign_up(page, studio_server, name)
    page.click("#lang-switch")  # the studio's switch beats the browser's language
    expect(page.locator("#nav-create")).to_have_text(t("nav.create", chosen), timeout=WAIT)
    other = "en" if chosen == "zh" else "zh"
    for spec in library:
        choose(page, spec.name)
        form = page.locator(f"#form-{spec.name}")
        deadline = time.monotonic() + WAIT / 1000
        while True:  # a picture editor labels itself once it has loaded
            open_tab(page, t("create.beginner", chosen))
            text = form.inner_text()  # the Beginner view, then the Expert one
            open_tab(page, t("create.expert", chosen))
            text += form.inner_text()
            missing = [s for s in form_texts(spec, chosen) if s not in text]
            if not missing or time.monotonic() > deadline:
                break
            page.wait_for_timeout(250)
        assert not missing, (spec.name, missing)
        foreign = [p.label.get(other) for p in spec.params if p.label.get(other) != p.label.get(chosen)
                   and p.label.get(other) in text]
        assert not foreign, (spec.name, foreign)
        expect(page.locator(f"#card-{spec.name}")).to_contain_text(t("create.use", chosen))
    if chosen == "zh":
        choose(page, "txt2img-sd15")
        page.locator("#p-prompt textarea").fill("夕阳下的灯塔")
        expect(page.locator("#price-line")).to_contain_text(re.compile(r"价格: \d+ 积分"), timeout=WAIT)
        job = create(page)
        wait_state(page, job, "succeeded")
        expect(page.locator("#progress-card")).to_contain_text("已完成")
        output_src(page)
        shot(page, "create-zh.png")
        page.goto(studio_server.url + "/studio/account")
        expect(page.locator("#ledger-table")).to_contain_text("新用户赠送", timeout=WAIT)
        expect(page.locator("#ledger-table")).to_contain_text("文生图（SD 1.5） · 任务")
        shot(page, "account-zh.png")
        page.goto(studio_server.url + "/studio/admin")
        expect(page.locator("#admin-denied")).to_contain_text("仅限管理员", timeout=WAIT)
    # The choice is the account's: another browser, of the other locale, signs in to it.
    fresh = new_page(browser, locale=browser_locale)
    sign_in(fresh, studio_server, name)
    expect(fresh.locator("#nav-create")).to_have_text(t("nav.create", chosen), timeout=WAIT)
    choose(fresh, "txt2img-sd15")
    expect(fresh.locator("#form-txt2img-sd15")).to_contain_text(library.get("txt2img-sd15").title.get(chosen))
    expect(fresh.locator("#go")).to_have_text(t("create.go", chosen))


def test_the_admin_page_in_chinese(browser, studio_server) -> None:
    admin = new_page(browser, locale="zh-CN")
    sign_in(admin, studio_server, ADMIN_NAME, ADMIN_PASSWORD)
    admin.goto(studio_server.url + "/studio/admin")
    header = admin.locator("#nodes-table thead")
    expect(header).to_contain_text("节点", timeout=WAIT)
    expect(header).to_contain_text("空闲显存")
    expect(admin.locator("#nodes-table")).to_contain_text("模拟节点")
