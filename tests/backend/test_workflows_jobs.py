"""From a creator's values to a prompt and a price: validation, prompt building, quotes."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from backend.errors import GuardRejected, InvalidParameter
from backend.workflows import InputFacts, Library, build_prompt, quote, validate_params
from backend.workflows.spec import WorkflowSpec

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="module")
def library() -> Library:
    return Library.load(WORKFLOWS)


@pytest.fixture
def txt(library: Library) -> WorkflowSpec:
    return library.get("txt2img-sd15")


@pytest.fixture
def inv(library: Library) -> WorkflowSpec:
    return library.get("invert-scale")


# -- validation ------------------------------------------------------------------------------


def test_beginner_values_fill_expert_defaults(txt: WorkflowSpec) -> None:
    values = validate_params(txt, {"prompt": "a cat", "seed": "42"})
    assert values["seed"] == 42 and values["steps"] == 20 and values["cfg"] == 7.0
    assert (values["width"], values["height"]) == (512, 512)
    assert values["aspect"] == "square" and values["style"] == "none"


def test_presets_set_expert_values(txt: WorkflowSpec) -> None:
    values = validate_params(txt, {"prompt": "a cat", "aspect": "portrait", "style": "photo"})
    assert (values["width"], values["height"]) == (512, 768)
    assert values["sampler"] == "dpmpp_2m" and values["steps"] == 25 and "photograph" in values["style_keywords"]


def test_expert_values_win_over_presets(txt: WorkflowSpec) -> None:
    values = validate_params(txt, {"prompt": "a cat", "aspect": "portrait", "height": 640}, expert=True)
    assert (values["width"], values["height"]) == (512, 640)


def test_validated_values_validate_again_to_themselves(txt: WorkflowSpec) -> None:
    first = validate_params(txt, {"prompt": "a cat", "style": "anime", "steps": 30}, expert=True)
    assert validate_params(txt, first, expert=True) == first


def test_random_seed_is_resolved_and_recorded(txt: WorkflowSpec) -> None:
    a = validate_params(txt, {"prompt": "x"}, rng=random.Random(1))
    b = validate_params(txt, {"prompt": "x", "seed": -1}, rng=random.Random(1))
    assert a["seed"] == b["seed"] >= 0 and a["seed"] <= 2**53 - 1
    assert validate_params(txt, {"prompt": "x"}, rng=random.Random(2))["seed"] != a["seed"]


@pytest.mark.parametrize(
    ("raw", "expert", "param", "message"),
    [
        ({}, False, "prompt", r"Prompt \(prompt\) is required"),
        ({"prompt": ""}, False, "prompt", "is required"),
        ({"prompt": " \n\t "}, False, "prompt", "is required"),  # blanks say nothing
        ({"prompt": "x", "steps": 30}, False, "steps", "expert setting; switch to expert mode"),
        ({"prompt": "x", "colour": "red"}, True, "colour", "has no parameter 'colour'"),
        ({"prompt": "x", "steps": 0}, True, "steps", r"Steps \(steps\) must be between 1 and 60, not 0"),
        ({"prompt": "x", "steps": 61}, True, "steps", "between 1 and 60, not 61"),
        ({"prompt": "x", "steps": 2.5}, True, "steps", "must be a whole number"),
        ({"prompt": "x", "steps": True}, True, "steps", "must be a whole number"),
        ({"prompt": "x", "steps": "many"}, True, "steps", "must be a whole number, not 'many'"),
        ({"prompt": "x", "cfg": "nan"}, True, "cfg", "must be a number"),
        ({"prompt": "x", "cfg": 0.5}, True, "cfg", r"between 1 and 20, not 0\.5"),
        ({"prompt": "x", "width": 515}, True, "width", "steps of 8 from 256"),
        ({"prompt": "x", "sampler": "magic"}, True, "sampler", "must be one of euler, "),
        ({"prompt": "x", "aspect": "round"}, False, "aspect", "must be one of square, portrait"),
        ({"prompt": "x", "seed": -2}, False, "seed", "or -1 for a random seed"),
        ({"prompt": "x" * 2001}, False, "prompt", "2001 characters long; the limit is 2000"),
        ({"prompt": "x", "style_keywords": "a\nb"}, True, "style_keywords", "control character"),
        ({"prompt": 12}, False, "prompt", "must be text"),
    ],
)
def test_invalid_values_are_named(txt: WorkflowSpec, raw: dict, expert: bool, param: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message) as info:
        validate_params(txt, raw, expert=expert)
    assert info.value.param == param
    assert param in info.value.zh


def test_string_values_from_forms_are_converted(txt: WorkflowSpec) -> None:
    values = validate_params(txt, {"prompt": "x", "steps": "30", "cfg": "7.5", "batch_size": "2.0"}, expert=True)
    assert values["steps"] == 30 and values["cfg"] == 7.5 and values["batch_size"] == 2


def test_file_param_is_required(inv: WorkflowSpec) -> None:
    with pytest.raises(InvalidParameter, match=r"Image \(image\) is required"):
        validate_params(inv, {"scale": 2})


# -- prompt ----------------------------------------------------------------------------------


def test_prompt_carries_values_and_leaves_the_template_alone(txt: WorkflowSpec) -> None:
    before = copy.deepcopy(txt.graph)
    values = validate_params(txt, {"prompt": "a red fox", "seed": 7, "style": "anime", "aspect": "landscape"})
    prompt = build_prompt(txt, values, filename_prefix="jobs/abc")
    assert txt.graph == before
    assert prompt["10"]["inputs"]["string_a"] == "a red fox"
    assert prompt["3"]["inputs"]["seed"] == 7 and prompt["3"]["inputs"]["sampler_name"] == "euler_ancestral"
    assert (prompt["5"]["inputs"]["width"], prompt["5"]["inputs"]["height"]) == (768, 512)
    assert prompt["6"]["inputs"]["text"] == ["10", 0]  # links untouched
    assert prompt["9"]["inputs"]["filename_prefix"] == "jobs/abc"
    json.dumps(prompt)  # sendable as is
    prompt["3"]["inputs"]["steps"] = 999
    assert txt.graph["3"]["inputs"]["steps"] == 20


def test_prompt_uses_the_node_side_upload_name(inv: WorkflowSpec) -> None:
    values = validate_params(inv, {"image": "sha256-abc", "scale": 2, "method": "area"}, expert=True)
    prompt = build_prompt(inv, values, uploads={"image": "studio_in (1).png"})
    assert prompt["1"]["inputs"]["image"] == "studio_in (1).png"
    assert prompt["3"]["inputs"] == {"image": ["2", 0], "upscale_method": "area", "scale_by": 2.0}
    with pytest.raises(InvalidParameter, match="has not been uploaded"):
        build_prompt(inv, values)


# -- quotes ----------------------------------------------------------------------------------


def test_txt2img_cost_grows_with_steps_area_and_batch(txt: WorkflowSpec) -> None:
    base = validate_params(txt, {"prompt": "x"}, expert=True)
    small = quote(txt, base)
    assert small.cost == 2 and small.accepted  # 20 steps at 512x512: 2 credits
    big = quote(txt, {**base, "steps": 40, "width": 1024, "batch_size": 2})
    assert big.cost == 16 and big.memory_mb > small.memory_mb and big.seconds > small.seconds


def test_txt2img_guard_refuses_huge_batches_with_a_helpful_message(txt: WorkflowSpec) -> None:
    values = validate_params(txt, {"prompt": "x", "width": 1024, "height": 1024, "batch_size": 4}, expert=True)
    result = quote(txt, values)
    assert not result.accepted
    assert "4.2 megapixels" in result.rejection.en and "at most 2 at this size" in result.rejection.en
    assert "最多 2 张" in result.rejection.zh
    with pytest.raises(GuardRejected, match="4.2 megapixels") as info:
        result.check()
    assert "百万像素" in info.value.zh


def test_invert_scale_quote_uses_image_facts(inv: WorkflowSpec) -> None:
    values = validate_params(inv, {"image": "ref", "scale": 2})
    result = quote(inv, values, {"image": InputFacts(width=1000, height=1000)})
    assert result.accepted and result.cost == 2  # 1 + 4 MP / 4
    result.check()


def test_invert_scale_guard_says_how_far_to_shrink(inv: WorkflowSpec) -> None:
    values = validate_params(inv, {"image": "ref", "scale": 4})
    result = quote(inv, values, {"image": InputFacts(width=2000, height=2000)})
    assert result.rejection is not None
    assert "64.0 megapixels" in result.rejection.en and "at most 2.00" in result.rejection.en
    small = quote(inv, {**values, "scale": 0.25}, {"image": InputFacts(width=40, height=400)})
    assert "only 10 pixels" in small.rejection.en and "at least 0.40" in small.rejection.en


def test_quote_needs_the_facts_of_each_file(inv: WorkflowSpec) -> None:
    values = validate_params(inv, {"image": "ref"})
    with pytest.raises(InvalidParameter, match="has not been measured") as info:
        quote(inv, values, {})
    assert info.value.param == "image"
