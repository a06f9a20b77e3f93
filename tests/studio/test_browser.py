"""End-to-end in headless Chromium against ``run_studio.py`` itself (see
``conftest.studio_server``, one for the session): the real backend, worker, agent and the
built-in simulated ComfyUI node. Failures and holds are switched on in the simulator over
HTTP (``/sim/faults``); nothing of ours is replaced. Pages, signing in and the waits are
in ``browsing.py``.

The suite uses the studio as a person does: every workflow of the library is opened (one
test per workflow, all on one page of one user: the *tour*), one control of each kind it
has (slider, number box, dropdown, preset radio, text box, seed, picture upload, drawn
mask) is changed through the page, the job is created, and the parameters the *database*
stored for it are compared with what was set; each result is checked in the element for
its kind (a loaded ``<img>``, an ``<audio>`` or ``<video>`` with a duration, a video the
player can seek in). Both languages are checked on every form from a browser of the other
locale.

Nothing here depends on how fast the machine is: a job's progress is watched at holds the
simulator keeps until released, and every wait is for a condition. To refresh the docs'
screenshots run ``STUDIO_SCREENSHOTS=docs/screenshots make test ARGS="tests/studio -m browser"``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from backend import jobs
from backend.config import REPO_ROOT
from backend.db import Database
from backend.workflows import Library, Param, WorkflowSpec
from studio.i18n import t
from studio.widgets import MAX_SLIDER_SPAN
from tests.e2e.stack import png_bytes

from .browsing import (ACTIVE, JOB_WAIT, WAIT, Pages, browser, choose, create, draw_stroke, expect,  # noqa: F401
                       fill_prompt, images_loaded, open_context, open_studio, output_src, pages, pixels, shot,
                       sign_in, sign_up, signed_up, unique, until, wait_for_price, wait_state,
                       wait_until_shown)
from ..studio_process import ADMIN_NAME, ADMIN_PASSWORD, StudioServer

pytestmark = pytest.mark.browser
LIBRARY = Library.load(REPO_ROOT / "workflows")

# Records what the progress card showed while a job ran: every change of the card, so a
# short stage or step count that comes and goes between two polls is still seen.
WATCH_CARD = """() => {
  window.__cards = [];
  const seen = () => {
    const card = document.querySelector('#progress-card');
    if (!card) return;
    const preview = card.querySelector('.shot.preview img');
    const stage = card.querySelector('#stage');
    window.__cards.push({state: card.dataset.state, job: card.dataset.job, text: card.innerText,
                         stage: stage ? stage.innerText : '', fraction: card.dataset.fraction,
                         preview: preview ? preview.getAttribute('src') : null});
  };
  new MutationObserver(seen).observe(document.querySelector('#progress'), {subtree: true, childList: true,
                                                                          characterData: true, attributes: true});
}"""


@pytest.fixture(autouse=True)
def no_faults(studio_server: StudioServer) -> Iterator[None]:
    studio_server.reset_faults()
    yield
    studio_server.reset_faults()


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


def set_control(page: Any, param: Param, value: object) -> None:
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


def open_tab(page: Any, tab: str) -> None:
    page.locator("#mode-tabs").get_by_role("tab", name=tab).click()


def show(page: Any, param: Param) -> None:
    """Expert fields sit in the Expert tab; beginner ones are always visible."""
    if not param.beginner:
        open_tab(page, "Expert")


def picture_colour(spec: WorkflowSpec, name: str) -> tuple[int, int, int]:
    """The colour of the picture the tour uploads for the image input ``name``."""
    i = [p.name for p in spec.file_params if p.type == "image"].index(name)
    return (40 + 60 * i, 140, 200)


def upload_inputs(page: Any, spec: WorkflowSpec, folder: Path) -> None:
    """Upload a picture for each image input (masks are drawn last: :func:`draw_masks`)."""
    for param in (p for p in spec.file_params if p.type == "image"):
        picture = folder / f"{spec.name}-{param.name}.png"
        picture.write_bytes(png_bytes(576, 576, picture_colour(spec, param.name)))  # room for the default crop
        page.locator(f"#in-{param.name} input[type=file]").set_input_files(str(picture))
        expect(page.locator("#price-line")).not_to_contain_text(f"Upload {param.label.en} ")


def draw_masks(page: Any, spec: WorkflowSpec) -> None:
    """A stroke on each mask, once its picture shows in the editor."""
    for param in (p for p in spec.file_params if p.type == "mask"):
        assert param.mask_of, f"{spec.name}: the tour draws masks over their picture"
        wait_until_shown(page, f"#in-{param.name}", picture_colour(spec, param.mask_of))
        draw_stroke(page, f"#in-{param.name}")


def loaded(page: Any, kind: str) -> float:
    """Waits until the result is shown by the element for its kind and has loaded; returns
    the picture's natural width or the player's duration."""
    selector = {"image": "#shots .output img", "audio": "#shots .output audio", "video": "#shots .output video"}[kind]
    expect(page.locator(selector).first).to_be_attached()
    measure = {"image": "e.complete && e.naturalWidth", "audio": "e.duration", "video": "e.videoWidth && e.duration"}[kind]
    return page.wait_for_function(
        f"s => {{ const e = document.querySelector(s); const v = e && ({measure}); return v > 0 && isFinite(v) ? v : null; }}",
        arg=selector, timeout=JOB_WAIT).json_value()


def disabled_controls(page: Any) -> list[str]:
    return page.evaluate("""() => Array.from(document.querySelectorAll(
        '[id^=p-] input, [id^=p-] textarea, [id^=preset-] input, #go, [id^=new-]'))
        .filter(e => e.disabled).map(e => e.closest('[id]').id)""")


@pytest.fixture(scope="module")
def stored(studio_server: StudioServer) -> Iterator[Database]:
    """The studio's own database, read as the truth of what a job was given."""
    db = Database(f"sqlite:///{(studio_server.data_dir / 'studio.db').resolve()}")
    yield db
    db.engine.dispose()


# ---- the tour: every workflow, one control of each kind, on one page of one user ----------


@dataclass
class Tour:
    page: Any
    name: str
    #: The result kinds of the workflows whose job succeeded, for the History test.
    kinds: set[str] = field(default_factory=set)
    #: False while a test runs on the page; still False after one failed (reload first).
    clean: bool = True

    def begin(self, server: StudioServer) -> Any:
        if not self.clean:
            open_studio(self.page, server)
        self.clean = False
        return self.page


@pytest.fixture(scope="module")
def tour(browser: Any, studio_server: StudioServer) -> Iterator[Tour]:
    name = unique("tour")
    context = open_context(browser, studio_server, session=signed_up(studio_server, name))
    page = context.new_page()
    open_studio(page, studio_server)
    expect(page.locator("#form-txt2img-sd15")).to_be_visible()  # the landing workflow
    yield Tour(page, name)
    context.close()


def tour_plan(spec: WorkflowSpec) -> tuple[list[tuple[Any, Any]], list[tuple[Param, object]]]:
    """What the tour sets on ``spec``'s form: a non-default option of each preset, and a
    new value for one parameter of each control kind (plus any required text)."""
    presets = [(preset, next(o for o in preset.options if o.name != preset.default)) for preset in spec.presets]
    by_preset = {n for preset in spec.presets for option in preset.options for n in option.values}
    changes: list[tuple[Param, object]] = []
    kinds: set[str] = set()
    for param in spec.params:
        kind = control_kind(param)
        if param.type in ("image", "mask") or param.name in by_preset or kind in kinds:
            continue
        kinds.add(kind)
        changes.append((param, changed_value(param)))
    changed = {p.name for p, _ in changes}
    changes += [(p, "a test") for p in spec.params
                if p.required and p.type in ("text", "string") and p.name not in changed and p.name not in by_preset]
    return presets, changes


def test_the_tour_uses_every_kind_of_control_and_result() -> None:
    kinds: set[str] = set()
    for spec in LIBRARY:
        presets, changes = tour_plan(spec)
        kinds |= {"radio"} if presets else set()
        kinds |= {control_kind(p) for p, _ in changes}
        kinds |= {"output-" + o.kind for o in spec.outputs}
    assert {"slider", "number", "dropdown", "radio", "textbox", "seed"} <= kinds, kinds
    assert {"output-image", "output-audio", "output-video"} <= kinds, kinds
    assert {p.type for spec in LIBRARY for p in spec.file_params} >= {"image", "mask"}


def test_tour_a_grant_on_the_admin_page_reaches_the_header_without_a_reload(
        tour: Tour, pages: Pages, studio_server: StudioServer) -> None:
    page = tour.begin(studio_server)
    admin = pages.as_user(ADMIN_NAME, password=ADMIN_PASSWORD, path="/studio/admin")
    admin.get_by_role("tab", name="Users").click()
    admin.locator("#admin-user textarea, #admin-user input").first.fill(tour.name)
    admin.locator("#admin-credits input").fill("900")
    admin.click("#admin-grant")
    expect(page.locator("#balance")).to_contain_text("1000 credits")  # no reload: the header follows
    tour.clean = True


@pytest.mark.parametrize("workflow", LIBRARY.names())
def test_tour_every_control_reaches_the_job_and_every_result_plays(
        tour: Tour, studio_server: StudioServer, stored: Database, workflow: str, tmp_path: Path) -> None:
    page = tour.begin(studio_server)
    spec = LIBRARY.get(workflow)
    choose(page, spec.name)
    assert disabled_controls(page) == [], spec.name
    upload_inputs(page, spec, tmp_path)
    presets, changes = tour_plan(spec)
    expected: dict[str, object] = {}
    for preset, option in presets:  # a beginner's choice, e.g. "Widescreen"
        open_tab(page, "Beginner")
        page.locator(f"#preset-{preset.name}").get_by_label(option.label.en, exact=True).check()
        expected[preset.name] = option.name
        expected.update(option.values)
    for param, value in changes:
        show(page, param)
        set_control(page, param, value)
        expected[param.name] = value
    draw_masks(page, spec)
    wait_for_price(page, drawn=any(p.type == "mask" for p in spec.file_params))
    expect(page.locator("#price-line .msg"), f"{spec.name}: {page.locator('#price-line').inner_text()}").to_have_count(0)  # no guard, no error
    job = create(page)
    wait_state(page, job, "succeeded")
    for output in spec.outputs:
        assert loaded(page, output.kind) > 0, (spec.name, output.kind)
        if output.kind == "video":  # the file route answers ranges, so the player can seek
            seekable = page.wait_for_function(
                """() => { const v = document.querySelector('#shots .output video');
                           return v && v.seekable.length > 0 && v.seekable.end(0) > 0 ? v.seekable.end(0) : null; }""",
                timeout=WAIT).json_value()
            assert seekable > 0, spec.name
    params = jobs.get(stored, job).params
    for key, value in expected.items():
        assert params[key] == pytest.approx(value) if isinstance(value, float) else params[key] == value, \
            (spec.name, key, params[key], value)
    tour.kinds |= {o.kind for o in spec.outputs}
    tour.clean = True


def test_tour_history_shows_each_kind_in_its_element_and_the_ledger_says_what_each_row_was_for(
        tour: Tour, studio_server: StudioServer) -> None:
    assert {"image", "audio", "video"} <= tour.kinds, f"the workflow tests of the tour ran first: {tour.kinds}"
    page = tour.begin(studio_server)
    page.click("#nav-history")  # the right element per kind in History too
    expect(page.locator("#history-table")).to_be_visible()
    for kind in ("img", "audio", "video"):
        expect(page.locator(f"#history-table .thumbs {kind}").first).to_be_attached()
    assert page.locator("#history-table .thumbs img[src*='.flac'], #history-table .thumbs img.audio").count() == 0
    page.wait_for_function("() => Array.from(document.querySelectorAll('#history-table audio')).every(a => a.duration > 0)",
                           timeout=WAIT)
    page.click("#nav-account")  # what each ledger row was for
    expect(page.locator("#ledger-table")).to_contain_text("Make music (ACE-Step) · job")
    expect(page.locator("#ledger-table")).to_contain_text("Welcome credits")
    expect(page.locator("#ledger-table")).to_contain_text(f"From {ADMIN_NAME}")
    tour.clean = True


# ---- one scenario each ---------------------------------------------------------------------


def test_create_watch_progress_beginner_and_expert_are_one_form_then_draw_again_with_a_new_seed(
        pages: Pages, studio_server: StudioServer, stored: Database) -> None:
    page = pages.blank()
    page.goto(studio_server.url + "/studio/")
    expect(page.locator("#signin")).to_be_visible()
    shot(page, "signin.png")
    sign_up(page, studio_server, unique("creator"))  # the sign-up form, as a person fills it in
    expect(page.locator("#balance")).to_contain_text("100 credits")
    choose(page, "txt2img-sd15")
    # Before typing: the price and a hint, no red "required" (and never the field key).
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: 2 credits.*Fill in “Prompt”", re.S))
    expect(page.locator("#form-error, #notice .msg")).to_have_count(0)
    page.locator("#p-prompt textarea").fill("   ")
    page.click("#go")  # blanks are no prompt: refused, not charged
    expect(page.locator("#rejection")).to_have_text("Prompt is required")
    expect(page.locator("#balance")).to_contain_text("100 credits")
    page.locator("#p-prompt textarea").fill("a lighthouse at sunset")
    page.locator("#preset-aspect").get_by_label("Widescreen 16:9", exact=True).check()
    open_tab(page, "Expert")  # the same values, seen in full: nothing typed is lost
    expect(page.locator("#p-prompt textarea")).to_have_value("a lighthouse at sunset")
    expect(page.locator("#p-width input[type=number]")).to_have_value("912")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: 4 credits"))
    expect(page.locator("#price-line .msg")).to_have_count(0)
    page.locator("#p-width input[type=number]").fill("512")
    page.locator("#p-width input[type=number]").press("Tab")
    # More steps than the default: a sampler that runs for a while shows its step count.
    page.locator("#p-steps input[type=number]").fill("40")
    page.locator("#p-steps input[type=number]").press("Tab")
    open_tab(page, "Beginner")  # 512x512 is no longer "Widescreen": the choice is cleared
    expect(page.locator("#preset-aspect input:checked")).to_have_count(0)

    # The job is held where the simulator is told to, so what the card shows at each
    # point is certain however slow the machine: first at the sampler...
    page.evaluate(WATCH_CARD)
    studio_server.faults(hang_in_node="KSampler")
    job = create(page)
    card = page.locator(f"#progress-card[data-job='{job}']")
    expect(card).to_have_attribute("data-state", "running", timeout=JOB_WAIT)
    expect(card.locator("#stage")).to_have_text("Painting")
    expect(card.locator("#progress-meta")).to_contain_text(re.compile(r"about \d+ s left"))
    expect(page.locator("#balance")).to_contain_text("96 credits")  # the debit, shown at once
    # ... then after it (the sampler runs its steps, sending previews), at the decoder.
    studio_server.faults(hang_in_node="VAEDecode")
    expect(card.locator("#stage")).to_have_text("Developing the picture", timeout=JOB_WAIT)
    expect(card.locator(".shot.preview img")).to_be_visible()  # the sampler's last preview
    studio_server.reset_faults()
    wait_state(page, job, "succeeded")
    first = output_src(page)
    seen = [c for c in page.evaluate("window.__cards") if c["job"] == job]
    fractions = [float(c["fraction"]) for c in seen]
    assert fractions == sorted(fractions), fractions  # the bar never goes back...
    assert seen[-1]["state"] == "succeeded" and fractions[-1] == 1.0, seen[-1]  # ... and ends full
    assert "100%" in seen[-1]["text"], seen[-1]["text"]
    order = [s.en for s in LIBRARY.get("txt2img-sd15").stages.values()]
    stages = [c["stage"] for c in seen if c["state"] == "running"]
    shown = [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    if shown[:1] == ["Running"]:  # the state's name, until the node's first stage arrives
        shown = shown[1:]
    assert {"Painting", "Developing the picture"} <= set(shown) <= set(order), shown
    assert shown == sorted(shown, key=order.index), shown  # the stages in the workflow's order
    steps = [c["text"] for c in seen if c["stage"] == "Painting" and re.search(r"step \d+/40", c["text"])]
    assert steps, [c["text"] for c in seen]  # the sampler's step count was shown
    assert any(c["preview"] for c in seen), "no preview was shown"
    assert jobs.get(stored, job).params["width"] == 512  # the hand-set value, not the preset's
    assert jobs.get(stored, job).params["steps"] == 40
    shot(page, "create.png")

    page.click("#nav-history")
    expect(page.locator("#history-table")).to_contain_text("a lighthouse at sunset")  # the prompt
    shot(page, "history.png")
    page.locator(f"#open-{job}").click()  # the job view: prompt, parameters, full-size result
    expect(page.locator("#job-prompt")).to_have_text("a lighthouse at sunset")
    expect(page.locator("#job-params")).to_contain_text("Sampler")
    images_loaded(page)
    page.locator(f"#job-{job} #again-{job}").click()
    expect(page.locator("#form-txt2img-sd15")).to_be_visible()
    expect(page.locator("#p-prompt textarea")).to_have_value("a lighthouse at sunset")
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
    expect(page.locator("#balance")).to_contain_text("88 credits")  # three jobs of 4
    page.goto(studio_server.url + "/studio/")  # the page opens on what this user makes most
    expect(page.locator("#form-txt2img-sd15")).to_be_visible()


def test_use_this_workflow_brings_the_form_into_view_on_a_phone(pages: Pages) -> None:
    page, _ = pages.new_user("phone", viewport={"width": 390, "height": 844}, is_mobile=True)
    expect(page.locator("#form-txt2img-sd15")).to_be_visible()
    form_top = page.locator("#form-area").bounding_box()["y"]
    assert form_top < 2 * 844, form_top  # one row of cards, not 19, above the form
    page.locator("#use-music-ace-step").scroll_into_view_if_needed()
    page.click("#use-music-ace-step")
    expect(page.locator("#form-music-ace-step")).to_be_in_viewport()


def test_all_nodes_busy_asks_then_queues_shows_the_place_and_a_queued_job_can_be_cancelled(
        pages: Pages, studio_server: StudioServer) -> None:
    page, _ = pages.new_user("busy")
    fill_prompt(page, "a held fox")
    studio_server.faults(hang_in_node="KSampler")  # the node's jobs stop in the sampler until released
    held = [create(page), create(page)]  # one running + one waiting in ComfyUI: the only node is full
    wait_state(page, held[-1], ACTIVE)
    page.click("#go")
    expect(page.locator("#busy-message")).to_contain_text(re.compile(r"busy.*about \d+ s", re.IGNORECASE))
    expect(page.locator("#queue-anyway")).to_be_visible()
    shot(page, "queue-confirm.png")
    queued = create(page, button="#queue-anyway")
    wait_state(page, queued, "queued")
    # Its place and wait, not a step countdown.
    expect(page.locator("#progress-meta")).to_contain_text(re.compile(r"0 jobs ahead · about \d+ s wait"))
    expect(page.locator("#progress-meta")).not_to_contain_text("left")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(page.locator("#balance")).to_contain_text("94 credits")  # three jobs of 2 credits
    page.click("#cancel")
    wait_state(page, queued, "cancelled")
    expect(page.locator("#refund")).to_contain_text(re.compile(r"2 credits refunded"))
    expect(page.locator("#balance")).to_contain_text("96 credits")
    studio_server.reset_faults()  # release the held jobs: both finish
    page.click("#nav-history")
    expect(page.locator("#history-table")).to_contain_text("Cancelled")
    until(lambda: page.locator("#history-table .pill.succeeded").count() == 2,
          lambda: page.click("#history-refresh"), "the two held jobs to finish")
    page.click("#nav-account")
    expect(page.locator("#ledger-table")).to_contain_text("Text to image (SD 1.5) · job")
    expect(page.locator("#ledger-table")).to_contain_text("cancelled")


def test_a_failure_shows_the_reason_and_the_refund(pages: Pages, studio_server: StudioServer) -> None:
    page, _ = pages.new_user("unlucky")
    fill_prompt(page, "a doomed painting")
    studio_server.faults(raise_in_node="KSampler")
    job = create(page)
    wait_state(page, job, "failed")
    expect(page.locator("#failure")).to_contain_text("The job failed during “Painting”: InjectedFault")
    expect(page.locator("#refund")).to_contain_text("2 credits refunded")
    expect(page.locator("#balance")).to_contain_text("100 credits")  # debited, then refunded
    shot(page, "failure.png")


def test_inpainting_with_a_mask_drawn_in_the_browser_then_drawn_again_from_the_stored_inputs(
        pages: Pages, studio_server: StudioServer, tmp_path: Path) -> None:
    picture = tmp_path / "lake.png"
    picture.write_bytes(png_bytes(320, 240, (30, 140, 200)))
    page, _ = pages.new_user("painter")
    choose(page, "inpaint-sd15")
    expect(page.locator("#price-line")).to_contain_text("Upload Picture")
    page.locator("#in-image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#price-line")).to_contain_text("Upload Area to repaint")
    wait_until_shown(page, "#in-mask", (30, 140, 200))
    page.locator("#p-prompt textarea").fill("a red boat")
    draw_stroke(page, "#in-mask")
    wait_for_price(page, drawn=True)
    job = create(page)
    wait_state(page, job, "succeeded")
    first = output_src(page)
    shot(page, "inpaint.png")

    page.goto(f"{studio_server.url}/studio/?again={job}")  # what History's "draw again" link opens
    expect(page.locator("#form-inpaint-sd15")).to_be_visible()
    expect(page.locator("#stored-image img")).to_be_visible()  # the stored picture, no upload
    expect(page.locator("#stored-mask")).to_be_visible()
    expect(page.locator("#p-prompt textarea")).to_have_value("a red boat")
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: \d+ credits"))
    again = create(page)
    wait_state(page, again, "succeeded")
    assert pixels(page, output_src(page)) == pixels(page, first)  # same picture, mask and seed: same result


def test_admin_units_codes_and_a_user_cannot_open_another_users_output(
        pages: Pages, studio_server: StudioServer) -> None:
    owner, _ = pages.new_user("owner")
    other, _ = pages.new_user("other")
    fill_prompt(owner, "a private picture")
    job = create(owner)
    wait_state(owner, job, "succeeded")
    src = output_src(owner)
    assert owner.request.get(studio_server.url + src).status == 200
    assert other.request.get(studio_server.url + src).status == 404  # not yours: same answer as missing
    assert requests.get(studio_server.url + src, timeout=60).status_code == 404  # signed out

    admin = pages.as_user(ADMIN_NAME, password=ADMIN_PASSWORD)
    admin.click("#nav-admin")
    expect(admin.locator("#nodes-table")).to_contain_text(re.compile(r"simulated", re.IGNORECASE))
    expect(admin.locator("#nodes-table")).to_contain_text("online")
    expect(admin.locator("#nodes-table thead")).to_contain_text("Speed (s per estimated s)")  # a unit
    expect(admin.locator("#nodes-table")).to_contain_text(re.compile(r"\d\.\d\d \(\d+\.\d× the estimate's pace\)"))
    shot(admin, "admin.png")
    assert admin.request.get(studio_server.url + src).status == 200  # administrators may open any file
    admin.get_by_role("tab", name="Redeem codes").click()
    admin.locator("#make-codes").click()
    expect(admin.locator("#new-codes textarea")).to_have_value(re.compile(r"\w{4}-"))
    code = admin.locator("#new-codes textarea").input_value().splitlines()[0]
    other.goto(studio_server.url + "/studio/account")
    # The page's own load events first: a header rendered by a late load would show the
    # balance from before the redeem.
    expect(other.locator("#balance")).to_contain_text("100 credits")
    expect(other.locator("#account-balance")).to_contain_text("100")
    other.locator("#redeem-code textarea, #redeem-code input").first.fill(code)
    other.click("#redeem")
    expect(other.locator("#redeem-result")).to_contain_text("100 credits added")
    expect(other.locator("#balance")).to_contain_text("200 credits")  # the header, without a reload
    expect(other.locator("#ledger-table")).to_contain_text("Redeem code …")


def form_texts(spec: WorkflowSpec, lang: str) -> list[str]:
    """What a form must show in ``lang``: title, every label, the tabs and the button."""
    texts = [spec.title.get(lang)] + [p.label.get(lang) for p in spec.params] + [p.label.get(lang) for p in spec.presets]
    return texts + [t(k, lang) for k in ("create.beginner", "create.expert", "create.go")]


@pytest.mark.parametrize(("browser_locale", "chosen"), [("en-US", "zh"), ("zh-CN", "en")])
def test_the_chosen_language_renders_every_form_and_follows_the_account(
        pages: Pages, studio_server: StudioServer, library: Library, browser_locale: str, chosen: str) -> None:
    page, name = pages.new_user("lang", locale=browser_locale)
    page.click("#lang-switch")  # the studio's switch beats the browser's language
    expect(page.locator("#nav-create")).to_have_text(t("nav.create", chosen))
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
        expect(page.locator("#price-line")).to_contain_text(re.compile(r"价格: \d+ 积分"))
        job = create(page)
        wait_state(page, job, "succeeded")
        expect(page.locator("#progress-card")).to_contain_text("已完成")
        output_src(page)
        shot(page, "create-zh.png")
        page.goto(studio_server.url + "/studio/account")
        expect(page.locator("#ledger-table")).to_contain_text("新用户赠送")
        expect(page.locator("#ledger-table")).to_contain_text("文生图（SD 1.5） · 任务")
        shot(page, "account-zh.png")
        page.goto(studio_server.url + "/studio/admin")
        expect(page.locator("#admin-denied")).to_contain_text("仅限管理员")
    # The choice is the account's: another browser, of the other locale, signs in to it
    # through the sign-in form.
    fresh = pages.blank(locale=browser_locale)
    sign_in(fresh, studio_server, name)
    expect(fresh.locator("#nav-create")).to_have_text(t("nav.create", chosen))
    choose(fresh, "txt2img-sd15")
    expect(fresh.locator("#form-txt2img-sd15")).to_contain_text(library.get("txt2img-sd15").title.get(chosen))
    expect(fresh.locator("#go")).to_have_text(t("create.go", chosen))


def test_the_admin_page_in_chinese(pages: Pages) -> None:
    admin = pages.as_user(ADMIN_NAME, "zh-CN", password=ADMIN_PASSWORD, path="/studio/admin")
    header = admin.locator("#nodes-table thead")
    expect(header).to_contain_text("节点")
    expect(header).to_contain_text("空闲显存")
    expect(admin.locator("#nodes-table")).to_contain_text("模拟节点")
