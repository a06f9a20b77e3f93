"""Loading workflow specs: the shipped library, the node schema, and broken specs failing loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.config import Settings
from backend.errors import NotFound, SpecError
from backend.workflows import Library, ModelFile, ModelSlot, check_graph, check_spec, load_all, load_spec

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
# The simulator's copy of a real ComfyUI's /object_info, else the shared one beside the repo.
OBJECT_INFO_CANDIDATES = (REPO / "comfysim" / "object_info.json", REPO.parent / "shared" / "comfyui-object-info.json")


@pytest.fixture(scope="module")
def object_info() -> dict:
    for path in OBJECT_INFO_CANDIDATES:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    pytest.skip("no ComfyUI object_info.json found")


@pytest.fixture(scope="module")
def library() -> Library:
    return Library.load(WORKFLOWS)


def test_settings_point_at_the_shipped_library() -> None:
    assert Settings().workflows_dir == WORKFLOWS


def test_shipped_workflows_load(library: Library) -> None:
    assert set(library.names()) >= {"invert-scale", "txt2img-sd15"}
    for spec in library:
        assert spec.example is not None and spec.example.stat().st_size < 100_000
        assert spec.title.en and spec.title.zh and spec.description.zh


@pytest.mark.parametrize("name", ["invert-scale", "txt2img-sd15"])
def test_shipped_graphs_fit_the_real_node_schema(library: Library, object_info: dict, name: str) -> None:
    assert check_spec(library.get(name), object_info) == []


def test_schema_check_finds_real_problems(library: Library, object_info: dict) -> None:
    spec = library.get("invert-scale")
    graph = json.loads(json.dumps(spec.graph))
    graph["3"]["inputs"]["scale_by"] = 100  # ImageScaleBy allows at most 8
    graph["3"]["inputs"]["upscale_method"] = "magic"
    graph["2"]["class_type"] = "NoSuchNode"
    graph["4"]["inputs"]["images"] = ["1", 1]  # LoadImage output 1 is a MASK
    problems = "\n".join(check_graph(graph, object_info))
    assert "100 is outside 0.01..8.0" in problems
    assert "'magic' is not one of" in problems
    assert "unknown class 'NoSuchNode'" in problems
    assert "expects IMAGE, linked to a MASK" in problems


def test_node_classes_and_models_are_derived(library: Library) -> None:
    txt = library.get("txt2img-sd15")
    assert txt.node_classes == {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler",
                                "VAEDecode", "SaveImage", "StringConcatenate"}
    assert txt.models == {ModelFile("checkpoints", "v1-5-pruned-emaonly.safetensors")}
    inv = library.get("invert-scale")
    assert inv.models == frozenset() and "LoadImage" in inv.node_classes


def test_library_lookup_names_what_exists(library: Library) -> None:
    with pytest.raises(NotFound, match="no workflow named 'nope'.*invert-scale"):
        library.get("nope")
    assert "invert-scale" in library and len(library) == len(library.names())


# -- broken specs ----------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the invert-scale workflow."""
    target = tmp_path / "invert-scale"
    shutil.copytree(WORKFLOWS / "invert-scale", target)
    return target


def edit(folder: Path, old: str, new: str, file: str = "spec.toml") -> None:
    path = folder / file
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('{ graph_node = "3", input = "scale_by" }', '{ graph_node = "99", input = "scale_by" }',
         r"params\.scale\.targets\[0\]\.graph_node: node '99' is not in graph\.json"),
        ('{ graph_node = "3", input = "scale_by" }', '{ graph_node = "3", input = "scale" }',
         r"params\.scale\.targets\[0\]\.input: node '3' \(ImageScaleBy\) has no input 'scale'"),
        ('{ graph_node = "3", input = "scale_by" }', '{ graph_node = "3", input = "image" }',
         r"is a link to another node"),
        ('graph_node = "4"', 'graph_node = "42"', r"outputs\[0\]\.graph_node: node '42' is not in graph\.json"),
        # Specs written before the vocabulary settled: the old key is named, with its new name.
        ('{ graph_node = "3", input = "scale_by" }', '{ node = "3", input = "scale_by" }',
         r"params\.scale\.targets\[0\]\.node: the key 'node' is now 'graph_node'"),
        ('\ngraph_node = "4"', '\nnode = "4"', r"outputs\[0\]\.node: the key 'node' is now 'graph_node'"),
        ('"2" = {', '"77" = {', r"stages\.77: node '77' is not in graph\.json"),
        ('cost = "1 + image_area', 'cost = "1 + imag_area', r"formulas\.cost: unknown name 'imag_area'"),
        ('cost = "1 + image_area', 'cost = "__import__(1) + image_area', r"formulas\.cost: unknown function"),
        ('memory_mb = ', 'memory = ', r"formulas\.memory_mb: missing formula"),
        ("default = 1.5", "default = 9.5", r"params\.scale\.default: Scale \(scale\) must be between 0\.25 and 4"),
        ('default = "lanczos"', 'default = "sharpest"', r"params\.method\.default: .*must be one of"),
        ('type = "float"', 'type = "decimal"', r"params\.scale\.type: 'decimal' is not one of"),
        ('level = "beginner"\ndefault', 'level = "novice"\ndefault', r"params\.scale\.level"),
        ('name = "scale"', 'name = "Scale!"', r"params\[1\]\.name"),
        ('name = "scale"', 'name = "sqrt"', r"not a formula function"),
        ('name = "method"', 'name = "scale"', r"params\[2\]\.name: duplicate parameter 'scale'"),
        ('name = "method"', 'name = "image_width"', r"clashes with an input fact"),
        ("min = 0.25", "min = 5.0", r"params\.scale\.min: is larger than max"),
        ('title.zh = "反相缩放"\n', "", r"title\.zh: missing or empty text"),
        ('category = "tool"', 'category = "Tools & more"', r"category"),
        ('category = "tool"', 'category = "tool"\ncolour = "red"', r"colour: unknown key"),
        ("figures.out_megapixels", "figures.mp", r"guard\[0\]\.message\.en: placeholder \{out_megapixels\}"),
        ("{max_scale:.2f}, or", "{max_scale.__class__}, or", r"guard\[0\]\.message\.en: placeholder"),
        ('reject_if = "image_area * scale**2 > 16e6"', 'reject_if = "image_area.real"',
         r"guard\[0\]\.reject_if: attribute access '\.real'"),
        ('level = "beginner"\ntargets', 'required = false\nlevel = "beginner"\ntargets',
         r"params\.image\.required: a file input is always required"),
        ("step = 0.05", "step = 0", r"params\.scale\.step: must be positive"),
        ('category = "tool"', 'category = "tool', r"cannot read TOML"),
    ],
)
def test_broken_spec_fails_naming_file_and_field(folder: Path, old: str, new: str, message: str) -> None:
    edit(folder, old, new)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(folder)
    assert str(folder / "spec.toml") in str(info.value)


def test_broken_graph_names_the_graph_file(folder: Path) -> None:
    edit(folder, '"images": ["3", 0]', '"images": ["8", 0]', "graph.json")
    with pytest.raises(SpecError, match=r"graph\.json: 4\.inputs\.images: links to node '8'"):
        load_spec(folder)


def test_ui_format_graph_is_explained(folder: Path) -> None:
    (folder / "graph.json").write_text('{"nodes": [], "links": []}', encoding="utf-8")
    with pytest.raises(SpecError, match="Export \\(API\\)"):
        load_spec(folder)


def test_missing_graph_is_named(folder: Path) -> None:
    (folder / "graph.json").unlink()
    with pytest.raises(SpecError, match=r"graph\.json: missing file"):
        load_spec(folder)


def test_choice_param_on_a_loader_makes_a_model_slot(folder: Path) -> None:
    graph = json.loads((folder / "graph.json").read_text())
    graph["5"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}
    graph["6"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "fixed.safetensors", "model": ["5", 0],
                                                                    "strength_model": 1.0}}
    (folder / "graph.json").write_text(json.dumps(graph))
    edit(folder, "[[outputs]]", '''[[params]]
name = "upscaler"
type = "choice"
label.en = "Upscaler"
label.zh = "放大模型"
options = ["4x.pth", "2x.pth"]
default = "4x.pth"
targets = [{ graph_node = "5", input = "model_name" }]

[[models]]
folder = "embeddings"
file = "easynegative.safetensors"

[[outputs]]''')
    spec = load_spec(folder)
    assert spec.model_slots == (ModelSlot(folder="upscale_models", param="upscaler"),)
    assert spec.models == {ModelFile("loras", "fixed.safetensors"), ModelFile("embeddings", "easynegative.safetensors")}
    assert ModelFile("upscale_models", "2x.pth") in spec.required_models({"upscaler": "2x.pth"})
    assert ModelFile("upscale_models", "4x.pth") not in spec.required_models({"upscaler": "2x.pth"})


def test_library_load_skips_a_broken_folder_and_load_all_reports_each(folder: Path, tmp_path: Path) -> None:
    shutil.copytree(WORKFLOWS / "txt2img-sd15", tmp_path / "txt2img-sd15")
    edit(folder, 'graph_node = "4"', 'graph_node = "42"')
    library = Library.load(tmp_path)  # the studio still starts, without the broken one
    assert library.names() == ["txt2img-sd15"] and "outputs" in str(library.problems[0])
    specs, errors = load_all(tmp_path)
    assert [s.name for s in specs] == ["txt2img-sd15"] and len(errors) == 1


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        Library.load(tmp_path / "absent")
