"""Page logic without a browser, on the real stack of tests/e2e/stack.py (database, bus,
registry, worker, comfysim nodes with real agents), plus the ``/metrics`` route."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.db import Database
from studio.app import build_blocks, create_app
from studio.pages import admin, history
from studio.widgets import mask_png
from tests.backend.helpers import CHEAP_HASHER, make_user
from tests.e2e.stack import Stack, memory_ports, running_stack

from .helpers import Pages, studio_of


@pytest.fixture
def stack(db: Database, tmp_path: Path) -> Iterator[Stack]:
    bus, registry = memory_ports()
    with running_stack(db, bus, registry, tmp_path, nodes=1) as s:
        yield s


def test_a_drawn_mask_is_stored_transparent_where_painted_and_the_size_of_its_picture() -> None:
    strokes = Image.new("RGBA", (160, 120), (0, 0, 0, 0))  # the canvas may be scaled
    strokes.paste((255, 255, 255, 255), (40, 30, 80, 60))
    limits = {"max_bytes": 10**6, "max_pixels": 10**6}
    png = mask_png(png_of(strokes), size=(320, 240), **limits)  # the layer as the canvas uploads it
    mask = Image.open(io.BytesIO(png))
    assert mask.format == "PNG" and mask.mode == "RGBA" and mask.size == (320, 240)
    alpha = np.array(mask)[..., 3]
    assert alpha[60:120, 80:160].max() == 0  # painted: transparent
    assert alpha[:50].min() == 255 and alpha[:, 170:].min() == 255  # the rest: opaque
    empty = Image.new("RGBA", (320, 240), (0, 0, 0, 0))
    assert mask_png(png_of(empty), size=(320, 240), **limits) is None


def png_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_history_pages_through_older_jobs(stack: Stack) -> None:
    user = stack.user("pager", credits=1000)
    ids = [stack.accepted(user, "txt2img-sd15", {"prompt": f"picture {i}", "seed": i}, queue_if_busy=True).id
           for i in range(5)]
    stack.wait_ended(ids)
    studio = studio_of(stack.backend)
    first, cursor = history.history_page(studio, user.id, "en", size=2)
    assert cursor is not None and first.count("<tr>") == 3  # header + 2
    seen = re.findall(r'id="again-([0-9a-f]+)"', first)
    pages = 1
    while cursor is not None:
        page, cursor = history.history_page(studio, user.id, "en", size=2, before=dt.datetime.fromisoformat(cursor))
        seen += re.findall(r'id="again-([0-9a-f]+)"', page)
        pages += 1
    assert pages == 3 and sorted(seen) == sorted(ids) and len(set(seen)) == 5
    assert "Done" in first


def test_admin_tables_speak_chinese(stack: Stack) -> None:
    studio = studio_of(stack.backend)
    stack.user("someone")
    nodes = admin.nodes_table(studio, "zh")
    assert all(word in nodes for word in ("节点", "状态", "空闲显存", "模拟节点", "在线"))
    assert "状态" in admin.jobs_table(studio, "zh", failed_only=False)
    assert "最近登录" in admin.users_table(studio, "zh") and "正常" in admin.users_table(studio, "zh")
    assert "过期时间" in admin.batches_table(studio, "zh")
    assert "阶段别名" in admin.workflows_table(studio, "zh")
    assert "last" not in admin.users_table(studio, "zh").lower()


def test_only_intended_endpoints_are_public_and_admin_ones_check_the_role(stack: Stack) -> None:
    import gradio as gr

    studio = studio_of(stack.backend)
    demo = build_blocks(studio)
    public = {d.api_name for d in demo.fns.values() if d.api_visibility == "public"}
    assert public == {"cancel", "redeem"}, public  # admin events are private: never advertised
    admin_names = {d.api_name for d in demo.fns.values() if d.page == "admin" and d.api_name}
    assert {"admin_grant", "admin_disable", "admin_enable", "admin_create_user", "admin_codes", "admin_alias",
            "admin_signup", "admin_replay_dead_letters", "admin_replay_all_dead_letters",
            "admin_discard_dead_letters"} <= admin_names
    info = str(demo.get_api_info())
    assert not any(name in info for name in admin_names)
    stack.user("creator")
    request = gr.Request(username="creator")
    for name in sorted(n for n in admin_names if n.startswith("admin_")):
        fn = next(d.fn for d in demo.fns.values() if d.api_name == name)
        args = [None] * (len([p for p in fn.__code__.co_varnames[:fn.__code__.co_argcount] if p != "request"]))
        with pytest.raises(gr.Error, match="Administrators only"):
            fn(*args, request=request)


def test_metrics_on_loopback_or_with_the_bearer_token(stack: Stack) -> None:
    backend = stack.backend
    app = create_app(backend, wake=lambda: None, password_hasher=CHEAP_HASHER)
    with TestClient(app) as remote:  # TestClient's client address is "testclient": not loopback
        assert remote.get("/metrics").status_code == 403
        assert remote.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 403
    with TestClient(app, client=("127.0.0.1", 50000)) as local:
        r = local.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert re.search(r"^studio_nodes_online 1$", r.text, re.MULTILINE)
        assert "# TYPE studio_jobs gauge" in r.text

    tokened = dataclasses.replace(backend, settings=dataclasses.replace(backend.settings, metrics_token="s3cret"))
    app = create_app(tokened, wake=lambda: None, password_hasher=CHEAP_HASHER)
    with TestClient(app) as remote:
        assert remote.get("/metrics").status_code == 403
        assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
        r = remote.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "studio_jobs" in r.text


def test_an_admins_stage_alias_is_what_the_creator_sees(stack: Stack) -> None:
    make_user(stack.db, "root", role="admin")
    pages = Pages(studio_of(stack.backend))
    spec = stack.backend.library.get("txt2img-sd15")
    note, table = pages.call("admin_alias", "root", "txt2img-sd15", "3", " Dreaming ", "做梦中")
    assert 'class="msg ok"' in note and "<code>3</code> Dreaming / 做梦中" in table
    assert "has no graph node &#x27;99&#x27;" in pages.call("admin_alias", "root", "txt2img-sd15", "99", "x", "y")[0]
    assert "needs an English and a Chinese text" in pages.call("admin_alias", "root", "txt2img-sd15", "8", "", "y")[0]

    user = stack.user("cara", credits=1000)
    job = stack.accepted(user, "txt2img-sd15", {"prompt": "a fox"})
    seen = {e["graph_node"]: e["alias"] for e in stack.events_until_ended([job.id]) if e["type"] == "stage"}
    assert seen["3"] == {"en": "Dreaming", "zh": "做梦中"}  # the override
    others = (seen.keys() & spec.stages.keys()) - {"3"}
    assert others and all(seen[n] == {"en": spec.stages[n].en, "zh": spec.stages[n].zh} for n in others)

    stack.sims.nodes[0].set_faults(raise_in_node="KSampler")
    doomed = stack.accepted(user, "txt2img-sd15", {"prompt": "a wolf"})
    failed = [e for e in stack.events_until_ended([doomed.id]) if e["type"] == "failed"]
    assert stack.job(doomed.id).error_stage == "Dreaming" and "“Dreaming”" in failed[0]["reason"]["en"]
