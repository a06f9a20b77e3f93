"""Spec format extensions used by the library: a mask drawn on an image (``mask_of``) and a
target whose value is computed from its parameter (``value = "factor / 4"``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.errors import SpecError
from backend.workflows import build_prompt, check_spec, load_spec, validate_params

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
OBJECT_INFO = Path(__file__).resolve().parents[2] / "comfysim" / "object_info.json"


def _copy(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(WORKFLOWS / name, folder)
    return folder


def _edit(folder: Path, old: str, new: str) -> None:
    spec = folder / "spec.toml"
    text = spec.read_text(encoding="utf-8")
    assert old in text
    spec.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_mask_targets_the_merged_file_and_the_image_needs_no_target() -> None:
    spec = load_spec(WORKFLOWS / "inpaint-sd15")
    assert spec.param("mask").mask_of == "image" and spec.param("image").targets == ()
    values = validate_params(spec, {"image": "i" * 64, "mask": "m" * 64, "prompt": "tulips"})
    prompt = build_prompt(spec, values, uploads={"image": "studio/i.png", "mask": "studio/im-mask.png"})
    assert prompt["1"]["inputs"]["image"] == "studio/im-mask.png"


@pytest.mark.parametrize(("old", "new", "error"), [
    ('mask_of = "image"', 'mask_of = "prompt"', "'prompt' is not an image parameter"),
    ('mask_of = "image"\n', "", "only an image that a mask names in mask_of may have none"),
    ('name = "prompt"\ntype = "text"', 'name = "prompt"\ntype = "text"\nmask_of = "image"', "only a 'mask' parameter"),
])
def test_mask_of_mistakes_fail_loudly(tmp_path: Path, old: str, new: str, error: str) -> None:
    folder = _copy(tmp_path, "inpaint-sd15")
    _edit(folder, old, new)
    with pytest.raises(SpecError, match=error):
        load_spec(folder)


def test_a_computed_target_is_checked_against_the_node_range(tmp_path: Path) -> None:
    object_info = json.loads(OBJECT_INFO.read_text(encoding="utf-8"))
    assert check_spec(load_spec(WORKFLOWS / "upscale-model"), object_info) == []
    folder = _copy(tmp_path, "upscale-model")
    _edit(folder, 'value = "factor / 4"', 'value = "factor * 2"')  # 8 * 2 = 16 > ImageScaleBy's 8
    problems = check_spec(load_spec(folder), object_info)
    assert problems == ["params.factor: max 16.0 (sent as factor * 2) is above the node's maximum 8.0 for 'scale_by'"]


@pytest.mark.parametrize(("old", "new", "error"), [
    ('value = "factor / 4"', 'value = "factor / image_area"', "image_area"),
    ('targets = [{ graph_node = "2", input = "model_name" }]', 'targets = [{ graph_node = "2", input = "model_name", value = "1" }]',
     "only a numeric parameter's target"),
])
def test_computed_target_mistakes_fail_loudly(tmp_path: Path, old: str, new: str, error: str) -> None:
    folder = _copy(tmp_path, "upscale-model")
    _edit(folder, old, new)
    with pytest.raises(SpecError, match=error):
        load_spec(folder)


def test_a_computed_int_target_stays_an_int(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "photo-blur")
    _edit(folder, 'targets = [{ graph_node = "2", input = "blur_radius" }]',
          'targets = [{ graph_node = "2", input = "blur_radius", value = "radius / 2" }]')
    spec = load_spec(folder)
    prompt = build_prompt(spec, validate_params(spec, {"image": "x", "radius": 5}), uploads={"image": "studio/x.png"})
    assert prompt["2"]["inputs"]["blur_radius"] == 2 and isinstance(prompt["2"]["inputs"]["blur_radius"], int)
