"""The workflow import tool against hostile exports: a clear error, nothing written, the
library still loads, and time linear in the size of the graph."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.errors import SpecError
from backend.workflows import Library
from backend.workflows.importer import MAX_NESTING, import_export

EXPORT = Path(__file__).parent / "fixtures" / "exports" / "txt2img_api.json"
REPO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def base() -> dict:
    return json.loads(EXPORT.read_text(encoding="utf-8"))


def nested(depth: int) -> str:
    graph = base()
    text = json.dumps(graph)
    return text.replace('"steps": 20', '"steps": ' + "[" * depth + "1" + "]" * depth, 1)


def with_value(raw: str) -> str:
    """The base export with the literal ``raw`` JSON as the sampler's cfg."""
    text = json.dumps(base())
    assert '"cfg": 8' in text
    return text.replace('"cfg": 8', f'"cfg": {raw}', 1)


HOSTILE: dict[str, tuple[Callable[[], str | bytes], str]] = {
    "deep nesting (RecursionError)": (lambda: nested(100_000), "nested more than"),
    "nesting under the recursion limit": (lambda: nested(MAX_NESTING + 5), "nested more than"),
    "lone surrogate (UnicodeEncodeError)": (lambda: json.dumps(base()).replace('"beautiful', '"\\ud800beautiful', 1),
                                            "lone surrogate"),
    "10**400 (OverflowError)": (lambda: with_value("1" + "0" * 400), "too large"),
    "1e400": (lambda: with_value("1e400"), "not finite"),
    "NaN": (lambda: with_value("NaN"), "not a number a workflow can use"),
    "Infinity": (lambda: with_value("-Infinity"), "not a number a workflow can use"),
    "not UTF-8": (lambda: json.dumps(base()).encode("utf-8").replace(b"beautiful", b"beaut\xffful", 1), "not UTF-8"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_exports_are_refused_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    make, expected = HOSTILE[case]
    content = make()
    export = tmp_path / "export.json"
    if isinstance(content, bytes):
        export.write_bytes(content)
    else:
        export.write_text(content, encoding="utf-8", errors="surrogatepass")
    library = tmp_path / "workflows"
    library.mkdir()
    with pytest.raises(SpecError, match=expected) as refused:
        import_export(export, "hostile", library)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in refused.value.zh)
    assert list(library.iterdir()) == []


def test_a_failed_write_leaves_the_old_version_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.workflows import importer

    library = tmp_path / "workflows"
    first = import_export(EXPORT, "mine", library)
    before = (first.folder / "spec.toml").read_text(encoding="utf-8")

    def broken(_proposal: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer, "render_spec", broken)
    with pytest.raises(RuntimeError):
        import_export(EXPORT, "mine", library, force=True)
    assert (first.folder / "spec.toml").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in library.iterdir()) == ["mine"]


@pytest.mark.timeout(180)
def test_a_huge_graph_imports_in_linear_time(tmp_path: Path) -> None:
    # 20,000 samplers, each with its own steps: the old quadratic sharing of parameters
    # took minutes here (4x the nodes, 16x the time); linear, it takes seconds.
    graph = {str(i): {"class_type": "KSampler", "_meta": {"title": f"Sampler {i}"},
                      "inputs": {"seed": i, "steps": 20 + i, "cfg": 7.0, "model": [str(max(i - 1, 0)), 0]}}
             for i in range(20_000)}
    export = tmp_path / "big.json"
    export.write_text(json.dumps(graph), encoding="utf-8")
    result = import_export(export, "big", tmp_path / "workflows")
    assert len(result.proposal.params) > 20_000


def test_a_library_folder_that_fails_to_load_is_skipped_with_a_log_line(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    shutil.copytree(REPO_WORKFLOWS / "invert-scale", tmp_path / "invert-scale")
    broken = tmp_path / "broken"
    shutil.copytree(REPO_WORKFLOWS / "invert-scale", broken)
    spec = (broken / "spec.toml").read_text(encoding="utf-8")
    (broken / "spec.toml").write_text(spec.replace("min = ", "min = 1" + "0" * 400 + " # ", 1), encoding="utf-8")
    library = Library.load(tmp_path)
    assert library.names() == ["invert-scale"]
    assert "broken" in caplog.text and "workflows check" in caplog.text
