"""``python -m backend workflows …`` and ``formula check``, run through the real entry point."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from backend.cli import main

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(autouse=True)
def _library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    library = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, library)
    monkeypatch.setenv("STUDIO_WORKFLOWS_DIR", str(library))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STUDIO_CONFIG", raising=False)
    return library


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "workflows", "list")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and rows["txt2img-sd15"]["models"] == ["checkpoints/v1-5-pruned-emaonly.safetensors"]
    assert rows["invert-scale"]["params"] == ["image", "scale", "method"]


def test_check_passes_then_lists_problems(capsys: pytest.CaptureFixture[str], _library: Path) -> None:
    assert run(capsys, "workflows", "check")[0] == 0
    spec = _library / "invert-scale" / "spec.toml"
    spec.write_text(spec.read_text(encoding="utf-8").replace('graph_node = "4"', 'graph_node = "42"'), encoding="utf-8")
    code, out, _ = run(capsys, "workflows", "check")
    assert code == 1 and "ok  txt2img-sd15" in out and "BAD" in out and "outputs[0].graph_node" in out


def test_quote_prints_values_cost_and_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "workflows", "quote", "txt2img-sd15", "prompt=a cat", "seed=5", "aspect=portrait")
    assert code == 0
    assert "height = 768" in out and "seed = 5" in out and "cost: 3 credits" in out and "guard: accepted" in out


def test_quote_with_an_image_and_a_refusal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    Image.new("RGB", (2000, 1500), (10, 20, 30)).save(path)
    code, out, _ = run(capsys, "--json", "workflows", "quote", "invert-scale", "scale=4", "--image", f"image={path}")
    data = json.loads(out)
    assert code == 1 and data["accepted"] is False and "48.0 megapixels" in data["message_en"]
    assert len(data["values"]["image"]) == 64  # recorded by content hash, not by path


def test_quote_rejects_expert_values_without_expert(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "workflows", "quote", "txt2img-sd15", "prompt=x", "steps=30")
    assert code == 2 and "expert setting" in err
    code, out, _ = run(capsys, "workflows", "quote", "txt2img-sd15", "prompt=x", "steps=30", "--expert")
    assert code == 0 and "steps = 30" in out


def test_formula_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "formula", "check", "0.1 * steps", "steps=30")
    assert code == 0 and json.loads(out)["credits"] == 3
    code, out, _ = run(capsys, "formula", "check", "steps * width", "--workflow", "txt2img-sd15")
    assert code == 0 and "give steps=..., width=..." in out
    code, _, err = run(capsys, "formula", "check", "steps.__class__", "steps=1")
    assert code == 2 and "attribute access '.__class__'" in err
