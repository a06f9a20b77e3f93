"""Driving ``run_studio.py`` in headless Chromium: the browser, pages, signing in, and the
waits the browser tests share (``tests/studio/test_browser.py``, ``tests/security``).

- One Chromium per test module (``browser``); every page a test opens lives in a context
  of its own that is closed when the test ends (``pages``), so no page of an earlier test
  keeps running its scripts — on two cores, a dozen idle Gradio pages left open were what
  made the later tests slow and flaky.
- Signing in is done once over HTTP (``/signup``, ``/login``) and the session cookie put
  in the new context: the sign-in and sign-up *forms* are tested in their own tests
  (``sign_up``, ``sign_in``), not walked through again by every other one.
- Every wait is for a condition, with a ceiling (``WAIT``, ``JOB_WAIT``) that is reached
  only when the condition never comes, so it is set for a loaded machine.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from studio.auth import SESSION_COOKIE

from ..studio_process import StudioServer

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
#: Screenshots of the main pages are taken only when this names a folder (``docs/screenshots``
#: to refresh the docs' pictures); the waits before them run either way.
SHOTS = os.environ.get("STUDIO_SCREENSHOTS", "")
#: Ceilings in milliseconds: a page's element or answer, and a job's end.
WAIT = 60_000
JOB_WAIT = 180_000
PASSWORD = "correct horse battery"
ACTIVE = re.compile(r"queued|dispatched|submitted|running")

# Expectations without their own timeout wait this long (Playwright's default is 5 s).
expect.set_options(timeout=WAIT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


# ---- signing in over HTTP (the forms have their own tests) ---------------------------------


def signed_up(server: StudioServer, name: str, password: str = PASSWORD) -> str:
    """A new account made through ``POST /signup``; its session token."""
    r = requests.post(server.url + "/signup", data={"name": name, "password": password, "password2": password},
                      allow_redirects=False, timeout=60)
    assert r.status_code == 303, r.text[:500]
    return r.cookies[SESSION_COOKIE]


def signed_in(server: StudioServer, name: str, password: str = PASSWORD) -> str:
    """A session of an existing account through ``POST /login``; its token."""
    r = requests.post(server.url + "/login", data={"name": name, "password": password}, allow_redirects=False,
                      timeout=60)
    assert r.status_code == 303, r.text[:500]
    return r.cookies[SESSION_COOKIE]


def open_context(browser: Any, server: StudioServer, *, locale: str = "en-US", session: str | None = None,
                 **options: Any) -> Any:
    """A browser context (its own cookies and storage), signed in with ``session`` if given."""
    options.setdefault("viewport", {"width": 1360, "height": 900})
    context = browser.new_context(locale=locale, **options)
    context.set_default_timeout(WAIT)
    if session is not None:
        context.add_cookies([{"name": SESSION_COOKIE, "value": session, "url": server.url, "httpOnly": True,
                              "sameSite": "Lax"}])
    return context


def open_studio(page: Any, server: StudioServer, path: str = "/studio/") -> None:
    """Open a studio page as a signed-in user and wait until it has loaded (the balance)."""
    page.goto(server.url + path)
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"))


class Pages:
    """Opens pages for one test; closes their contexts when it ends (the ``pages`` fixture)."""

    def __init__(self, browser: Any, server: StudioServer) -> None:
        self.browser = browser
        self.server = server
        self._contexts: list[Any] = []

    def blank(self, locale: str = "en-US", **options: Any) -> Any:
        """A page of a fresh, signed-out browser."""
        context = open_context(self.browser, self.server, locale=locale, **options)
        self._contexts.append(context)
        return context.new_page()

    def new_user(self, prefix: str, locale: str = "en-US", **options: Any) -> tuple[Any, str]:
        """A page of a newly signed-up user, on the Create page; the page and the name."""
        name = unique(prefix)
        return self.as_user(name, locale, session=signed_up(self.server, name), **options), name

    def as_user(self, name: str, locale: str = "en-US", *, session: str | None = None,
                password: str = PASSWORD, path: str = "/studio/", **options: Any) -> Any:
        """A page of ``name`` signed in (a new session unless ``session`` is given), at ``path``."""
        session = session or signed_in(self.server, name, password)
        context = open_context(self.browser, self.server, locale=locale, session=session, **options)
        self._contexts.append(context)
        page = context.new_page()
        open_studio(page, self.server, path)
        return page

    def close(self) -> None:
        for context in self._contexts:
            try:
                context.close()
            except Exception:  # noqa: BLE001 - a context the test's failure already broke
                pass
        self._contexts.clear()


@pytest.fixture
def pages(browser: Any, studio_server: StudioServer) -> Iterator[Pages]:
    opened = Pages(browser, studio_server)
    yield opened
    opened.close()


# ---- the sign-in and sign-up forms ---------------------------------------------------------


def sign_up(page: Any, server: StudioServer, name: str) -> None:
    """Sign up through the form, as a person does."""
    page.goto(server.url + "/signup")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#signup")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"))


def sign_in(page: Any, server: StudioServer, name: str, password: str = PASSWORD) -> None:
    """Sign in through the form, as a person does."""
    page.goto(server.url + "/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("#signin")
    expect(page.locator("#balance")).to_contain_text(re.compile(r"\d+"))


# ---- the Create page -----------------------------------------------------------------------


def choose(page: Any, workflow: str) -> None:
    page.click(f"#use-{workflow}")
    expect(page.locator(f"#form-{workflow}")).to_be_visible()


def fill_prompt(page: Any, text: str, price: str = r"Price: \d+ credits") -> None:
    choose(page, "txt2img-sd15")
    page.locator("#p-prompt textarea").fill(text)
    expect(page.locator("#price-line")).to_contain_text(re.compile(price))


def wait_for_price(page: Any, *, drawn: bool = False) -> None:
    """The price line shows a price. After a stroke on an image editor the ceiling is
    ``JOB_WAIT``: the page first exports the drawing and uploads it, as for Create."""
    expect(page.locator("#price-line")).to_contain_text(re.compile(r"Price: \d+ credits"),
                                                        timeout=JOB_WAIT if drawn else WAIT)


def current_job(page: Any) -> str | None:
    card = page.locator("#progress-card")
    return card.get_attribute("data-job") if card.count() else None


def create(page: Any, *, button: str = "#go") -> str:
    """Click Create (or Queue anyway); the id of the job the card then shows.

    Up to ``JOB_WAIT``: with an image editor on screen the page first exports and uploads
    the drawing, which takes this software-rendered Chromium a minute on a busy machine.
    """
    before = current_job(page)
    page.click(button)
    handle = page.wait_for_function(
        """b => { const c = document.querySelector('#progress-card');
                  return c && c.dataset.job && c.dataset.job !== b ? c.dataset.job : null; }""",
        arg=before or "", timeout=JOB_WAIT)
    return handle.json_value()


def wait_state(page: Any, job: str, state: str | re.Pattern[str], timeout: int = JOB_WAIT) -> None:
    expect(page.locator(f"#progress-card[data-job='{job}']")).to_have_attribute("data-state", state, timeout=timeout)


def images_loaded(page: Any) -> None:
    page.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)", timeout=WAIT)


def shot(page: Any, name: str) -> None:
    """Every picture on the page has loaded; then a screenshot if ``STUDIO_SCREENSHOTS`` asks for them."""
    images_loaded(page)
    if not SHOTS:
        return
    page.wait_for_timeout(300)  # let transitions (progress bar, fades) settle for the picture
    folder = Path(SHOTS if SHOTS != "1" else Path(tempfile.gettempdir()) / "studio-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=True)


def output_src(page: Any) -> str:
    img = page.locator("#shots .output img").first
    expect(img).to_have_attribute("src", re.compile(r"^/files/[0-9a-f]{64}$"))
    page.wait_for_function("s => {const i=document.querySelector(s); return i && i.complete && i.naturalWidth>0}",
                           arg="#shots .output img", timeout=WAIT)
    return img.get_attribute("src")


def until(done: Callable[[], bool], step: Callable[[], None], what: str, timeout: float = 120.0) -> None:
    """Repeat ``step`` (e.g. a Refresh click) until ``done()``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        step()
        time.sleep(0.5)


def pixels(page: Any, src: str) -> bytes:
    """The decoded pixels of an output (PNG metadata names the job, so files differ)."""
    response = page.request.get(page.url.split("/studio")[0] + src)
    assert response.status == 200
    return Image.open(io.BytesIO(response.body())).convert("RGB").tobytes()


def wait_until_shown(page: Any, selector: str, rgb: tuple[int, int, int], timeout: float = WAIT / 1000) -> None:
    """Wait until the middle of the ``selector`` element's canvas shows the colour ``rgb``:
    the uploaded picture has reached the image editor. A person waits to see it before
    drawing; a stroke made before it arrives may not survive its arrival. The editor
    draws with WebGL, so this looks at a screenshot, not at the DOM."""
    canvas = page.locator(f"{selector} canvas").first
    canvas.scroll_into_view_if_needed()
    deadline = time.monotonic() + timeout
    while True:
        image = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
        middle = image.getpixel((image.width // 2, image.height // 2))
        if all(abs(a - b) <= 12 for a, b in zip(middle, rgb)):
            return
        assert time.monotonic() < deadline, \
            f"{selector} still shows {middle}, not the picture {rgb}, after {timeout:g} s"
        page.wait_for_timeout(200)


def draw_stroke(page: Any, selector: str) -> None:
    """One brush stroke across the middle of an ImageEditor canvas.

    Few pointer events: while an image editor is on screen, this software-rendered
    Chromium spends seconds on each one (and on every other action), so the stroke is
    three segments, not dozens.
    """
    canvas = page.locator(f"{selector} canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2 - 30
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, 4):
        page.mouse.move(x + i * 40, y + i * 20, steps=2)
    page.mouse.up()
