"""``python -m backend workflows import``: from a ComfyUI "Export (API)" file to a checked spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.cli import main
from backend.workflows import build_prompt, load_spec, validate_params
from comfysim import DEMO_MODELS, SimConfig, SimHandle, start_sim

EXPORTS = Path(__file__).parent / "fixtures" / "exports"


@pytest.fixture(autouse=True)
def _library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    library = tmp_path / "workflows"
    library.mkdir()
    monkeypatch.setenv("STUDIO_WORKFLOWS_DIR", str(library))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STUDIO_CONFIG", raising=False)
    return library


@pytest.fixture(scope="module")
def demo_sim() -> Iterator[SimHandle]:
    handle = start_sim(SimConfig(models={k: list(v) for k, v in DEMO_MODELS.items()}))
    yield handle
    handle.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_default_template_becomes_a_checked_spec(capsys: pytest.CaptureFixture[str], _library: Path) -> None:
    code, out, _ = run(capsys, "workflows", "import", str(EXPORTS / "txt2img_api.json"), "--name", "my-txt2img")
    assert code == 0 and "ok  my-txt2img" in out
    spec = load_spec(_library / "my-txt2img")
    beginner = [p.name for p in spec.params if p.beginner]
    assert beginner == ["prompt", "seed"]
    assert {p.name for p in spec.params} == {"prompt", "seed", "negative", "steps", "cfg", "sampler", "scheduler",
                                             "denoise", "checkpoint", "width", "height"}
    assert spec.param("prompt").required and spec.param("negative").default == "text, watermark"
    assert spec.param("seed").default == -1 and spec.param("seed").max == 2**53 - 1
    assert spec.param("width").step == 8 and spec.param("steps").max == 100
    # Without a node, a model choice offers only the file the export names.
    assert spec.param("checkpoint").options == ("v1-5-pruned-emaonly.safetensors",)
    assert spec.stage("3").en == "KSampler" and spec.stage("4").zh == "加载模型中"
    assert [(o.graph_node, o.kind) for o in spec.outputs] == [("9", "image")]
    assert run(capsys, "workflows", "check")[0] == 0  # the library still passes as a whole


def test_a_ui_format_file_is_refused_with_how_to_export(capsys: pytest.CaptureFixture[str], _library: Path) -> None:
    code, _, err = run(capsys, "workflows", "import", str(EXPORTS / "txt2img_ui.json"), "--name", "ui")
    assert code == 2 and "UI-format workflow" in err and "Workflow > Export (API)" in err
    assert "Save (API Format)" in err and not (_library / "ui").exists()


def test_a_drawn_mask_becomes_an_image_and_its_mask(capsys: pytest.CaptureFixture[str], _library: Path) -> None:
    code, out, _ = run(capsys, "--json", "workflows", "import", str(EXPORTS / "inpaint_lora_api.json"),
                       "--name", "dog-inpaint")
    assert code == 0 and json.loads(out)["problems"] == []
    spec = load_spec(_library / "dog-inpaint")
    image, mask = spec.param("image"), spec.param("mask")
    assert image.targets == () and mask.mask_of == "image" and mask.targets[0].graph_node == "10"
    assert spec.param("lora").options == ("add_detail.safetensors",) and spec.category == "image-to-image"
    assert [o.graph_node for o in spec.outputs] == ["9"]  # a saved result wins over the preview
    values = validate_params(spec, {"image": "a", "mask": "b", "prompt": "a cat"})
    prompt = build_prompt(spec, values, uploads={"image": "studio/a.png", "mask": "studio/b-mask.png"})
    assert prompt["10"]["inputs"]["image"] == "studio/b-mask.png"


def test_repeated_settings_share_or_split_parameters(capsys: pytest.CaptureFixture[str], _library: Path) -> None:
    assert run(capsys, "workflows", "import", str(EXPORTS / "hires_fix_api.json"), "--name", "hires")[0] == 0
    spec = load_spec(_library / "hires")
    assert [t.graph_node for t in spec.param("seed").targets] == ["3", "11"]  # same value: one seed for both passes
    assert spec.param("steps").default == 20 and spec.param("steps_2").default == 12
    assert spec.param("denoise_2").default == 0.5 and not spec.param("denoise_2").beginner
    assert spec.param("steps_2").label.en == "Steps (Hires pass)"


def test_ranges_and_options_come_from_the_node(capsys: pytest.CaptureFixture[str], _library: Path,
                                                demo_sim: SimHandle) -> None:
    code, out, _ = run(capsys, "workflows", "import", str(EXPORTS / "txt2img_api.json"), "--name", "from-node",
                       "--node-url", demo_sim.url)
    assert code == 0, out
    spec = load_spec(_library / "from-node")
    assert spec.param("checkpoint").options == tuple(sorted(DEMO_MODELS["checkpoints"]))
    assert len(spec.param("sampler").options) == 42  # the node's full list
    assert "ddim_uniform" in spec.param("scheduler").options
    assert spec.param("cfg").max == 30.0 and spec.param("denoise").min == 0.05  # creator caps within the node's range


def test_existing_workflows_are_not_overwritten(capsys: pytest.CaptureFixture[str], _library: Path) -> None:
    args = ("workflows", "import", str(EXPORTS / "txt2img_api.json"), "--name", "twice")
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == 2 and "already exists" in err
    assert run(capsys, *args, "--force")[0] == 0


def test_a_problem_found_by_the_check_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  demo_sim: SimHandle) -> None:
    export = json.loads((EXPORTS / "txt2img_api.json").read_text(encoding="utf-8"))
    export["3"]["inputs"]["sampler_name"] = "my_custom_sampler"  # a custom node's sampler, not on this node
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    code, out, _ = run(capsys, "workflows", "import", str(path), "--name", "custom", "--node-url", demo_sim.url)
    assert code == 1 and "BAD" in out and "my_custom_sampler" in out
