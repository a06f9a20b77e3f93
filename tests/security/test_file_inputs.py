"""Server paths handed to every event that takes a file, through Gradio's queue protocol.

The hole this closes: mounted (not launched) Gradio accepted any server path as an
uploaded file, copied it into its cache, named the copy in an error, and served it. Each
case must be refused before anything is opened: no asset stored, no credit charged, no
copy in Gradio's folders, no path or library text in what the attacker reads, and
``/file=`` of every path answers "not found".
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from backend.config import REPO_ROOT
from backend.workflows import Library
from tests.studio_process import StudioServer

from .conftest import Client, assert_no_leak, blob_path, footprint, owned_assets, png
from .gradio_protocol import API, Form, Outcome, file_data

FILE_KINDS = ("image", "imageeditor", "file")
NOT_UPLOADED = "not uploaded in your current session"
LIBRARY = Library.load(REPO_ROOT / "workflows")
FILE_WORKFLOWS = [spec.name for spec in LIBRARY if spec.file_params]


def victim_files(studio: StudioServer, victim: Client) -> dict[str, str]:
    """Files of another user: an upload in their session folder, their stored picture."""
    upload = victim.protocol().upload("private.png", png(40, 30, (9, 99, 199)))
    form = victim.protocol()
    picture = form.open_form("img2img-sd15")
    image = picture.components("image")[0]
    assert form.call(picture.event(image["id"], "upload"), [file_data(upload, "private.png")]).success
    (asset,) = owned_assets(studio, victim.name)
    return {"upload": upload, "asset": asset, "blob": str(blob_path(studio, asset))}


def hostile_paths(studio: StudioServer, mine: str, theirs: dict[str, str]) -> dict[str, str]:
    own_folder = Path(mine).parent.parent
    return {
        "/etc/passwd": "/etc/passwd",
        "/proc/self/environ": "/proc/self/environ",  # holds STUDIO_ADMIN_PASSWORD
        "the database": str(studio.data_dir / "studio.db"),
        "another user's output in the asset store": theirs["blob"],
        "another user's upload": theirs["upload"],
        "traversal out of my upload folder": f"{own_folder}/../{Path(theirs['upload']).parent.parent.name}/"
                                             f"{Path(theirs['upload']).parent.name}/{Path(theirs['upload']).name}",
        "relative path": "../../data/studio.db",
        "the studio's own code": str(REPO_ROOT / "run_studio.py"),
    }


def value_for(kind: str, path: str) -> Any:
    if kind == "imageeditor":
        fd = file_data(path, "layer.png")
        return {"background": fd, "layers": [fd], "composite": fd, "id": None}
    return file_data(path)


def attack(session: Any, form: Form, component: dict[str, Any], path: str) -> list[Outcome]:
    """Every event of the form that takes ``component``, with ``path`` as its value."""
    outcomes = []
    for dep in form.events_with_input(component["id"]):
        data = form.values(dep, **{str(component["id"]): value_for(component["type"], path)})
        outcomes.append(session.call(dep, data))
    return outcomes


def check_refused(outcome: Outcome) -> None:
    assert_no_leak(outcome.text, "passwd", "environ")
    if not outcome.success:
        assert NOT_UPLOADED in (outcome.error or ""), outcome.error


def test_every_file_handler_refuses_server_paths(studio: StudioServer, attacker: Client, victim: Client) -> None:
    theirs = victim_files(studio, victim)
    session = attacker.protocol()
    mine = session.upload("mine.png", png())
    before = footprint(studio, attacker.name)
    tried = 0
    for workflow in FILE_WORKFLOWS:
        form = session.open_form(workflow)
        components = [c for kind in FILE_KINDS for c in form.components(kind)]
        assert components, workflow
        paths = hostile_paths(studio, mine, theirs)
        if workflow not in ("img2img-sd15", "inpaint-sd15"):  # the rest: the worst three
            paths = {k: paths[k] for k in ("/etc/passwd", "/proc/self/environ", "another user's upload")}
        for component in components:
            for path in paths.values():
                for outcome in attack(session, form, component, path):
                    tried += 1
                    check_refused(outcome)
    assert tried > 100
    assert footprint(studio, attacker.name) == before  # nothing stored, nothing charged
    assert not owned_assets(studio, attacker.name) & {theirs["asset"]}
    gradio_files = [p for p in (studio.data_dir / "gradio").rglob("*") if p.is_file()]
    secrets = {Path("/etc/passwd").read_bytes(), Path(theirs["blob"]).read_bytes()}
    copies = [p for p in gradio_files if p.stat().st_size < 10**6 and p.read_bytes() in secrets
              and Path(theirs["upload"]).parent.parent not in p.parents]
    assert copies == [], copies  # nothing copied into Gradio's folders


def test_the_upload_event_names_the_problem_in_a_plain_sentence(studio: StudioServer, attacker: Client) -> None:
    session = attacker.protocol()
    form = session.open_form("img2img-sd15")
    image = form.components("image")[0]
    upload_event = form.event(image["id"], "upload")
    for path in ("/etc/passwd", "/proc/self/environ", str(studio.data_dir / "studio.db")):
        outcome = session.call(upload_event, [file_data(path, "x.png")])
        assert not outcome.success and outcome.error == (
            "This file was not uploaded in your current session. Please upload it again.")


def test_file_route_serves_only_my_own_uploads(studio: StudioServer, attacker: Client, victim: Client) -> None:
    theirs = victim_files(studio, victim)
    mine = attacker.protocol().upload("mine.png", png())
    own = attacker.http.get(f"{studio.url}{API}/file={mine}", timeout=10)
    assert own.status_code == 200 and own.headers["content-type"] == "image/png"
    assert own.headers["x-content-type-options"] == "nosniff"
    for path in hostile_paths(studio, mine, theirs).values():
        r = attacker.http.get(f"{studio.url}{API}/file={path}", timeout=10)
        assert r.status_code == 404, (path, r.status_code)
    assert victim.http.get(f"{studio.url}{API}/file={mine}", timeout=10).status_code == 404
    assert requests.get(f"{studio.url}{API}/file={mine}", timeout=10).status_code == 401  # signed out


def test_an_uploaded_html_file_is_never_served_inline(studio: StudioServer, attacker: Client) -> None:
    page = b"<!doctype html><script>fetch('/files/x')</script>"
    path = attacker.protocol().upload("picture.png", page)
    r = attacker.http.get(f"{studio.url}{API}/file={path}", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in r.headers["content-security-policy"]


def test_a_data_url_is_never_decoded_in_place_of_the_upload(studio: StudioServer, attacker: Client) -> None:
    session = attacker.protocol()
    form = session.open_form("img2img-sd15")
    image = form.components("image")[0]
    mine = session.upload("mine.png", png(20, 20))
    other = base64.b64encode(png(30, 30, (1, 2, 3))).decode()
    value = {**file_data(mine, "mine.png"), "url": f"data:image/png;base64,{other}"}
    before = owned_assets(studio, attacker.name)
    assert session.call(form.event(image["id"], "upload"), [value]).success
    (stored,) = owned_assets(studio, attacker.name) - before
    assert stored == hashlib.sha256(Path(mine).read_bytes()).hexdigest()  # the upload, not the URL


def test_other_users_assets_and_jobs_stay_theirs(studio: StudioServer, attacker: Client, victim: Client) -> None:
    theirs = victim_files(studio, victim)
    assert attacker.http.get(f"{studio.url}/files/{theirs['asset']}", timeout=10).status_code == 404
    assert victim.http.get(f"{studio.url}/files/{theirs['asset']}", timeout=10).status_code == 200
    # The form keeps asset ids in server-side state; a value the client sends for it is ignored.
    session = attacker.protocol()
    form = session.open_form("img2img-sd15")
    go = next(d for d in form.config["dependencies"]
              if any(t[0] == form.component("go")["id"] for t in d["targets"]))
    before = footprint(studio, attacker.name)
    outcome = session.call(go, [theirs["asset"]] * len(go["inputs"]))
    assert_no_leak(outcome.text)
    assert footprint(studio, attacker.name) == before
    assert theirs["asset"] not in owned_assets(studio, attacker.name)


@pytest.mark.parametrize("route", ["component_server", "info", "call/redeem", "run/redeem", "api/redeem",
                                   "deep_link", "monitoring", "file/etc/passwd", "proxy=http://127.0.0.1/",
                                   "upload_progress/../info", "startup-events", "run-history/records",
                                   "vibe-edit", "user", "token"])
def test_gradio_routes_the_pages_do_not_use_are_closed(studio: StudioServer, attacker: Client, route: str) -> None:
    for method in ("GET", "POST"):
        r = attacker.http.request(method, f"{studio.url}{API}/{route}", timeout=10)
        assert r.status_code in (404, 405), (route, method, r.status_code, r.text[:200])


def test_another_users_gradio_session_cannot_be_joined_or_read(studio: StudioServer, attacker: Client,
                                                               victim: Client) -> None:
    theirs = victim.protocol()
    theirs.open_form("img2img-sd15")  # the victim's page holds state under its session hash
    mine = attacker.protocol()
    mine.session_hash = theirs.session_hash
    load = mine.loads("")[0]
    r = attacker.http.post(f"{studio.url}{API}/queue/join", timeout=30,
                           json={"data": [], "fn_index": load["id"], "session_hash": theirs.session_hash})
    assert r.status_code == 403
    r = attacker.http.get(f"{studio.url}{API}/queue/data", params={"session_hash": theirs.session_hash}, timeout=30)
    assert r.status_code == 403
    assert attacker.http.get(f"{studio.url}{API}/heartbeat/{theirs.session_hash}", timeout=30).status_code == 403
    assert theirs.open_form("img2img-sd15").components("image")  # the owner carries on
