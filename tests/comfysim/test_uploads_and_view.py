"""Transcript §3: uploads (renaming, dedupe, subfolders, masks), /view rules, the 413 cap."""

from __future__ import annotations

import io
import json

import requests
from PIL import Image

from .helpers import WAIT, png_bytes, upload


def test_upload_rename_and_dedupe(sim):
    first = png_bytes()
    assert upload(sim.url, "studio_in.png", first, overwrite="true").json() == {
        "name": "studio_in.png",
        "subfolder": "",
        "type": "input",
    }
    assert upload(sim.url, "studio_in.png", first).json()["name"] == "studio_in.png"
    other = png_bytes(color=(1, 2, 3))
    assert upload(sim.url, "studio_in.png", other).json()["name"] == "studio_in (1).png"
    assert upload(sim.url, "studio_in.png", other).json()["name"] == "studio_in (1).png"
    assert upload(sim.url, "studio_in.png", png_bytes(color=(4, 5, 6))).json()["name"] == "studio_in (2).png"
    assert upload(sim.url, "studio_in.png", other, overwrite="1").json()["name"] == "studio_in.png"
    assert (sim.data_dir / "input" / "studio_in.png").read_bytes() == other


def test_upload_subfolder_temp_and_refusals(sim):
    data = png_bytes()
    assert upload(sim.url, "sub_in.png", data, subfolder="jobs/j1", type="input").json() == {
        "name": "sub_in.png",
        "subfolder": "jobs/j1",
        "type": "input",
    }
    assert upload(sim.url, "tmp_in.png", data, type="temp").json()["type"] == "temp"
    assert (sim.data_dir / "temp" / "tmp_in.png").is_file()
    no_image = requests.post(f"{sim.url}/upload/image", data={"overwrite": "true"}, files={"other": ("x", b"x")}, timeout=WAIT)
    assert (no_image.status_code, no_image.text) == (400, "")
    assert upload(sim.url, "../evil.png", data).status_code == 400
    assert upload(sim.url, "ok.png", data, subfolder="../../etc").status_code == 400
    assert upload(sim.url, "ok.png", data, type="models").status_code == 500

    view = requests.get(f"{sim.url}/view", params={"filename": "sub_in.png", "subfolder": "jobs/j1", "type": "input"}, timeout=WAIT)
    assert view.status_code == 200 and view.content == data
    assert view.headers["Content-Type"] == "image/png"
    assert view.headers["Content-Disposition"] == 'filename="sub_in.png"'


def test_view_edge_cases(sim):
    upload(sim.url, "studio_in.png", png_bytes(mode="RGBA", color=(10, 20, 30, 128)))
    cases = {
        "filename=missing.png": 404,
        "filename=../x.png": 400,
        "": 404,
        "filename=studio_in.png&type=bogus": 400,
        "filename=studio_in.png&type=input&subfolder=../../": 403,
        "filename=studio_in.png [input]": 200,
    }
    for query, status in cases.items():
        assert requests.get(f"{sim.url}/view?{query}", timeout=WAIT).status_code == status, query
    webp = requests.get(f"{sim.url}/view?filename=studio_in.png&type=input&preview=webp;50", timeout=WAIT)
    assert webp.headers["Content-Type"] == "image/webp"
    alpha = requests.get(f"{sim.url}/view?filename=studio_in.png&type=input&channel=a", timeout=WAIT)
    assert alpha.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(alpha.content)).getchannel("A").getpixel((0, 0)) == 128
    rgb = requests.get(f"{sim.url}/view?filename=studio_in.png&type=input&channel=rgb", timeout=WAIT)
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"


def test_upload_mask_merges_alpha_into_original(sim):
    upload(sim.url, "in.png", png_bytes(color=(200, 100, 50)))
    mask = png_bytes(mode="RGBA", color=(0, 0, 0, 7))
    response = requests.post(
        f"{sim.url}/upload/mask",
        files={"image": ("mask_of_in.png", mask, "image/png")},
        data={"original_ref": json.dumps({"filename": "in.png", "subfolder": "", "type": "input"})},
        timeout=WAIT,
    )
    assert response.json() == {"name": "mask_of_in.png", "subfolder": "", "type": "input"}
    merged = Image.open(sim.data_dir / "input" / "mask_of_in.png")
    assert merged.mode == "RGBA" and merged.getpixel((0, 0)) == (200, 100, 50, 7)
    missing = requests.post(
        f"{sim.url}/upload/mask",
        files={"image": ("mask_of_none.png", mask, "image/png")},
        data={"original_ref": json.dumps({"filename": "none.png", "type": "input"})},
        timeout=WAIT,
    )
    assert missing.status_code == 200 and not (sim.data_dir / "input" / "mask_of_none.png").exists()


def test_request_body_cap_gives_413(make_sim):
    sim = make_sim(max_upload_size=1024 * 1024)
    assert requests.get(f"{sim.url}/features", timeout=WAIT).json()["max_upload_size"] == 1024 * 1024
    big = b"\0" * (1024 * 1024 + 10)
    response = upload(sim.url, "big.png", big)
    assert response.status_code == 413
    assert response.text == "Maximum request body size 1048576 exceeded."
    prompt = requests.post(f"{sim.url}/prompt", data=b'{"prompt": "' + b"a" * 1100000 + b'"}', timeout=WAIT)
    assert prompt.status_code == 413
