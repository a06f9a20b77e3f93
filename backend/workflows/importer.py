"""Turning a ComfyUI "Export (API)" file into a proposed studio workflow (docs/workflows.md).

The proposal is a starting point an operator edits: it exposes the inputs creators usually
change (prompts, seed, steps, cfg, size, sampler, scheduler, denoise, images, masks, model
choices), marks prompt, seed and input files as beginner fields, names stages after the
nodes' titles and writes rough formulas to calibrate. With a node's ``/object_info`` the
types, ranges and options come from that node (capped to sensible creator limits); without
it, from built-in defaults that fit a stock ComfyUI.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError
from .loader import MODEL_INPUTS, WORKFLOW_NAME, load_spec
from .schema import check_spec
from .spec_writer import render_spec

UI_FORMAT_HELP = (
    "{path} is a UI-format workflow (it has 'nodes' and 'links'), the file ComfyUI's Save and "
    "Export write. The studio needs the API format: open the workflow in ComfyUI and use "
    "Workflow > Export (API) in the menu (older UIs: enable 'Dev mode' in Settings, then press "
    "'Save (API Format)'), then import that file."
)
UI_FORMAT_HELP_ZH = (
    "{path} 是界面格式的工作流（包含 'nodes' 和 'links'），即 ComfyUI 的“保存/导出”所生成的文件。"
    "工作室需要 API 格式：请在 ComfyUI 中打开该工作流，点击菜单 Workflow > Export (API)（旧版界面："
    "先在设置中启用 Dev mode，再点击 “Save (API Format)”），然后导入导出的文件。"
)

#: Nodes whose results are shown, and what they produce, when no /object_info says so.
OUTPUT_KINDS = {
    "SaveImage": "image", "PreviewImage": "image", "SaveImageWebsocket": "image",
    "SaveAnimatedWEBP": "video", "SaveAnimatedPNG": "video", "SaveVideo": "video", "SaveWEBM": "video",
    "SaveAudio": "audio", "SaveAudioMP3": "audio", "SaveAudioOpus": "audio", "PreviewAudio": "audio",
}
_PREVIEWS = {"PreviewImage", "PreviewAudio"}

#: Loader input -> (parameter name, en label, zh label) of a model choice.
_MODEL_PARAMS = {
    "checkpoints": ("checkpoint", "Model", "模型"),
    "loras": ("lora", "LoRA", "LoRA"),
    "controlnet": ("controlnet", "ControlNet", "ControlNet"),
    "vae": ("vae", "VAE", "VAE"),
    "upscale_models": ("upscale_model", "Upscale model", "放大模型"),
    "diffusion_models": ("unet", "Diffusion model", "扩散模型"),
    "text_encoders": ("text_encoder", "Text encoder", "文本编码器"),
}


@dataclass(frozen=True)
class Role:
    """How one kind of graph input becomes a parameter."""

    name: str
    type: str
    en: str
    zh: str
    beginner: bool = False
    #: Creator limits (intersected with the node's own range): min, max, step.
    limits: tuple[float | None, float | None, float | None] = (None, None, None)


_SIZE = (64, 2048, 8)
#: Input name -> role, for literal inputs of any node (classes are checked where it matters).
ROLES: Mapping[str, Role] = {
    "seed": Role("seed", "seed", "Seed", "随机种子", True, (0, 2**53 - 1, None)),
    "noise_seed": Role("seed", "seed", "Seed", "随机种子", True, (0, 2**53 - 1, None)),
    "steps": Role("steps", "int", "Steps", "采样步数", limits=(1, 100, None)),
    "cfg": Role("cfg", "float", "CFG scale", "提示词相关性（CFG）", limits=(1.0, 30.0, 0.5)),
    "sampler_name": Role("sampler", "choice", "Sampler", "采样器"),
    "scheduler": Role("scheduler", "choice", "Scheduler", "调度器"),
    "denoise": Role("denoise", "float", "Denoise", "去噪强度", limits=(0.05, 1.0, 0.05)),
    "width": Role("width", "int", "Width", "宽度", limits=_SIZE),
    "height": Role("height", "int", "Height", "高度", limits=_SIZE),
    "seconds": Role("seconds", "float", "Length (seconds)", "时长（秒）", True, (1.0, 240.0, 1.0)),
    "length": Role("frames", "int", "Frames", "帧数", limits=(1, 257, None)),
}
#: Built-in ranges for roles when no /object_info is given (a stock ComfyUI's).
_DEFAULT_RANGES = {"steps": (1, 10000, None), "cfg": (0.0, 100.0, 0.1), "denoise": (0.0, 1.0, 0.01),
                   "width": (16, 16384, 8), "height": (16, 16384, 8), "seconds": (1.0, 1000.0, 0.1),
                   "frames": (1, 16384, 8), "seed": (0, 2**64 - 1, None)}
_DEFAULT_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde",
                     "ddim", "uni_pc", "lcm"]
_DEFAULT_SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]
#: Inputs of size/length roles only count on nodes that make an empty latent or image.
_SIZE_ROLES = {"width", "height", "seconds", "frames"}
_SIZE_NODES = re.compile(r"^Empty.*(Latent|Image)|Latent.*Empty")
#: Text inputs that are prompts, by class (the rest of a class's text is left alone).
_PROMPT_INPUTS = {"CLIPTextEncode": ("text",), "CLIPTextEncodeSDXL": ("text_g", "text_l"),
                  "CLIPTextEncodeFlux": ("clip_l", "t5xxl"), "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
                  "TextEncodeAceStepAudio": ("tags", "lyrics")}
_STAGE_ZH = {"CheckpointLoaderSimple": "加载模型中", "UNETLoader": "加载模型中", "CLIPLoader": "加载文本编码器中",
             "LoraLoader": "加载 LoRA 中", "CLIPTextEncode": "理解提示词中", "KSampler": "绘制中",
             "KSamplerAdvanced": "绘制中", "SamplerCustom": "生成中", "SamplerCustomAdvanced": "生成中",
             "VAEDecode": "生成图片中", "VAEEncode": "分析图片中", "LoadImage": "读取图片中", "SaveImage": "保存中",
             "ImageUpscaleWithModel": "放大中", "ControlNetApplyAdvanced": "分析参考图中", "SaveAudio": "保存音频中",
             "SaveAnimatedWEBP": "保存视频中", "VAEDecodeAudio": "合成音频中"}


@dataclass
class Proposal:
    """A proposed spec: plain data that :func:`render_spec` turns into TOML."""

    name: str
    params: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    stages: dict[str, dict[str, str]] = field(default_factory=dict)
    formulas: dict[str, str] = field(default_factory=dict)
    guards: list[dict[str, Any]] = field(default_factory=list)
    category: str = "imported"


#: Nesting of a node's input values: literals are flat and links are ``[id, index]``;
#: deeper than this is not a ComfyUI export (and would exhaust Python's recursion).
MAX_NESTING = 32
#: Whole numbers beyond this are no ComfyUI value (seeds reach 2**64 - 1).
MAX_INTEGER = 2**64


def read_export(path: Path) -> dict[str, Any]:
    """The API-format graph in ``path``; a UI-format file is refused with how to export.

    Hostile files are refused with a :class:`SpecError` before anything is written:
    nesting deeper than ``MAX_NESTING``, text that is not valid UTF-8 or holds lone
    surrogates (``"\\ud800"``), numbers that are not finite or beyond ``MAX_INTEGER``.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the file: {exc.strerror}", zh=f"{path}：无法读取文件：{exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})", zh=f"{path}：不是 UTF-8 文本（第 {exc.start} 字节）") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _hostile(path, f"values nested more than {MAX_NESTING} levels deep", f"数值嵌套超过 {MAX_NESTING} 层") from None
    except ValueError as exc:
        raise SpecError(f"{path}: cannot read JSON: {exc}", zh=f"{path}：无法读取 JSON：{exc}") from None
    _check_values(path, data)
    if isinstance(data, dict) and {"nodes", "links"} <= data.keys():
        raise SpecError(UI_FORMAT_HELP.format(path=path), zh=UI_FORMAT_HELP_ZH.format(path=path))
    if not isinstance(data, dict) or not data or not all(
            isinstance(n, dict) and isinstance(n.get("class_type"), str) and isinstance(n.get("inputs"), dict)
            for n in data.values()):
        raise SpecError(f"{path}: not an API-format export (an object of node id -> {{class_type, inputs}})",
                        zh=f"{path}：不是 API 格式的导出文件（应为 节点 id -> {{class_type, inputs}} 的对象）")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a workflow can use")


def _hostile(path: Path, en: str, zh: str) -> SpecError:
    return SpecError(f"{path}: not a usable ComfyUI export: {en}", zh=f"{path}：不是可用的 ComfyUI 导出文件：{zh}")


def _check_values(path: Path, data: Any) -> None:
    """Walk every value once, without recursion (see :func:`read_export`)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            children = value
        else:
            children = None
        if children is not None:
            if depth >= MAX_NESTING + 2:  # the graph object and a node's inputs come first
                raise _hostile(path, f"values nested more than {MAX_NESTING} levels deep", f"数值嵌套超过 {MAX_NESTING} 层")
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _hostile(path, f"the text {value[:40]!r} holds a lone surrogate (an invalid \\uD800-\\uDFFF escape)",
                               f"文本 {value[:40]!r} 含有孤立的代理字符（无效的 \\uD800-\\uDFFF 转义）") from None
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_INTEGER:
                raise _hostile(path, f"the number {str(value)[:20]}… is too large", f"数字 {str(value)[:20]}… 过大")
        elif isinstance(value, float) and not math.isfinite(value):
            raise _hostile(path, f"the number {value} is not finite", f"数字 {value} 不是有限值")


def fetch_object_info(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """``GET {url}/object_info`` of a ComfyUI node (or comfysim)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/object_info", timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read {url}/object_info: {exc}", zh=f"无法读取 {url}/object_info：{exc}") from None


def propose(graph: Mapping[str, Any], name: str, object_info: Mapping[str, Any] | None = None) -> Proposal:
    """A proposed spec for ``graph``. ``object_info`` (a node's) supplies ranges and options."""
    proposal = Proposal(name=name)
    builder = _ParamBuilder(graph, object_info or {})
    for node_id, node in graph.items():
        builder.add_node(node_id, node)
    proposal.params = builder.finish()
    proposal.outputs = _outputs(graph, object_info or {})
    proposal.stages = {node_id: {"en": node["_meta"]["title"],
                                 "zh": _STAGE_ZH.get(node["class_type"], node["_meta"]["title"])}
                       for node_id, node in graph.items() if (node.get("_meta") or {}).get("title")}
    names = {p["name"] for p in proposal.params}
    proposal.formulas, proposal.guards = _formulas(names, proposal.params)
    proposal.category = _category(proposal.outputs, proposal.params)
    return proposal


def write_proposal(folder: Path, graph: Mapping[str, Any], proposal: Proposal) -> None:
    """Write ``folder`` whole or not at all: both files are rendered in memory, written to
    a hidden sibling folder, and that folder is renamed into place (replacing an old one
    only then)."""
    files = {"graph.json": json.dumps(graph, indent=2, ensure_ascii=False) + "\n", "spec.toml": render_spec(proposal)}
    encoded = {name: text.encode("utf-8") for name, text in files.items()}
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old = None
    try:
        for name, data in encoded.items():
            (staging / name).write_bytes(data)
        if folder.exists():
            old = folder.with_name(f"{staging.name}.old")
            folder.rename(old)
        staging.rename(folder)
    except BaseException:
        if old is not None and not folder.exists():
            old.rename(folder)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _ParamBuilder:
    """Collects parameters node by node; the same role with the same value shares one
    parameter (a seed used by two samplers), a different value gets its own (``steps_2``)."""

    def __init__(self, graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> None:
        self.graph = graph
        self.info = object_info
        self.params: list[dict[str, Any]] = []
        # (role, default) -> its parameter, and parameters per role: linear, not quadratic,
        # in the size of the graph.
        self._shared: dict[tuple[str, Any], dict[str, Any]] = {}
        self._count: dict[str, int] = {}
        self.negative_texts = _negative_prompt_nodes(graph)
        self.mask_users = {v[0] for n in graph.values() for v in n["inputs"].values() if _is_link(v) and v[1] == 1}
        # Denoise below 1 is a beginner's "strength" only when a picture is the starting point.
        self.image_to_image = any(n["class_type"] == "LoadImage" for n in graph.values())

    def add_node(self, node_id: str, node: Mapping[str, Any]) -> None:
        cls = node["class_type"]
        for input_name, value in node["inputs"].items():
            if _is_link(value):
                continue
            target = {"graph_node": node_id, "input": input_name}
            folder = MODEL_INPUTS.get((cls, input_name))
            if cls == "LoadImage" and input_name == "image":
                self.add_image(node_id, target)
            elif cls == "LoadImageMask" and input_name == "image":
                self.add("mask", "mask", "Mask", "蒙版", target, None, beginner=True)
            elif cls == "LoadAudio" and input_name == "audio":
                self.add("audio", "audio", "Audio", "音频", target, None, beginner=True)
            elif folder is not None and folder in _MODEL_PARAMS and isinstance(value, str):
                pname, en, zh = _MODEL_PARAMS[folder]
                options = self.combo(cls, input_name) or [value]
                self.add(pname, "choice", en, zh, target, value, options=options if value in options else [value, *options])
            elif input_name in _PROMPT_INPUTS.get(cls, ()) and isinstance(value, str):
                negative = node_id in self.negative_texts
                self.add("negative" if negative else "prompt", "text", "Negative prompt" if negative else "Prompt",
                         "反向提示词" if negative else "提示词", target, value, beginner=not negative,
                         required=not negative)
            elif input_name in ROLES and (ROLES[input_name].name not in _SIZE_ROLES or _SIZE_NODES.search(cls)):
                self.add_role(ROLES[input_name], cls, target, value)

    def add_image(self, node_id: str, target: dict[str, str]) -> None:
        # A LoadImage whose MASK output is used reads a picture with a drawn mask: the
        # creator uploads both and the node merges them (mask_of).
        image = self.add("image", "image", "Picture", "图片", target, None, beginner=True)
        if node_id in self.mask_users:
            image.pop("targets")
            self.add("mask", "mask", "Area to repaint", "重绘区域", target, None, beginner=True, mask_of=image["name"])

    def add_role(self, role: Role, cls: str, target: dict[str, str], value: Any) -> None:
        if role.type == "choice":
            fallback = _DEFAULT_SAMPLERS if role.name == "sampler" else _DEFAULT_SCHEDULERS
            options = self.combo(cls, target["input"]) or fallback
            self.add(role.name, "choice", role.en, role.zh, target, value,
                     options=options if value in options else [value, *options])
            return
        low, high, step = self.range(cls, target["input"], role)
        if role.type == "seed":
            value = -1  # a fresh seed per job unless the creator picks one
        beginner = role.beginner or (role.name == "denoise" and self.image_to_image and value < 1)
        self.add(role.name, role.type, role.en, role.zh, target, value, beginner=beginner, min=low, max=high, step=step)

    def combo(self, cls: str, input_name: str) -> list[str] | None:
        decl = _declared(self.info, cls, input_name)
        if decl is None:
            return None
        kind, options = decl[0], decl[1] if len(decl) > 1 else {}
        combo = kind if isinstance(kind, list) else options.get("options") if kind == "COMBO" else None
        return list(combo) if combo else None

    def range(self, cls: str, input_name: str, role: Role) -> tuple[Any, Any, Any]:
        decl = _declared(self.info, cls, input_name)
        node_min, node_max, node_step = _DEFAULT_RANGES.get(role.name, (None, None, None))
        if decl is not None and len(decl) > 1:
            node_min, node_max = decl[1].get("min", node_min), decl[1].get("max", node_max)
            node_step = decl[1].get("step", node_step)
        want_min, want_max, want_step = role.limits
        low = node_min if want_min is None else want_min if node_min is None else max(node_min, want_min)
        high = node_max if want_max is None else want_max if node_max is None else min(node_max, want_max)
        if role.type == "int":
            # Sizes in the node's steps (8 for latents, 32 for LTXV); counted from the minimum.
            step = node_step if node_step and node_step > 1 else None
        else:
            step = (want_step or node_step) if role.type == "float" else None
        return low, high, step

    def add(self, name: str, ptype: str, en: str, zh: str, target: dict[str, str], value: Any, **extra: Any
            ) -> dict[str, Any]:
        node = self.graph[target["graph_node"]]
        shareable = ptype not in ("image", "mask", "audio")
        key = (name, _hashable(value))
        if shareable and key in self._shared:
            self._shared[key]["targets"].append(target)
            return self._shared[key]
        count = self._count.get(name, 0)
        self._count[name] = count + 1
        title = (node.get("_meta") or {}).get("title") or node["class_type"]
        param = {"base": name, "name": name if not count else f"{name}_{count + 1}", "type": ptype,
                 "en": en if not count else f"{en} ({title})", "zh": zh if not count else f"{zh}（{title}）",
                 "targets": [target], **{k: v for k, v in extra.items() if v is not None}}
        if value is not None and shareable:
            param["default"] = value
        if shareable:
            self._shared.setdefault(key, param)
        self.params.append(param)
        return param

    def finish(self) -> list[dict[str, Any]]:
        for param in self.params:
            param.pop("base")
        # Beginner fields first, in the order creators fill them in: files, words, numbers, seed.
        order = {"image": 0, "mask": 0, "audio": 0, "text": 1, "seed": 3}
        return sorted(self.params, key=lambda p: (not p.get("beginner", False), order.get(p["type"], 2)))


def _hashable(value: Any) -> Any:
    """``value`` as a dictionary key that compares like ``==`` does (1 == 1.0 == True)."""
    if isinstance(value, (list, dict)):
        return ("json", json.dumps(value, sort_keys=True))
    return value


def _declared(info: Mapping[str, Any], cls: str, input_name: str) -> list[Any] | None:
    inputs = info.get(cls, {}).get("input", {})
    return {**inputs.get("required", {}), **inputs.get("optional", {})}.get(input_name)


def _negative_prompt_nodes(graph: Mapping[str, Any]) -> set[str]:
    """Text-encoder nodes that feed a sampler's ``negative`` (directly or through one node)."""
    negatives: set[str] = set()
    for node in graph.values():
        link = node["inputs"].get("negative")
        if not _is_link(link):
            continue
        source = graph.get(link[0], {})
        negatives.add(link[0])
        negatives.update(v[0] for k, v in source.get("inputs", {}).items() if k == "negative" and _is_link(v))
    return negatives


def _outputs(graph: Mapping[str, Any], info: Mapping[str, Any]) -> list[dict[str, str]]:
    found = []
    for node_id, node in graph.items():
        cls = node["class_type"]
        is_output = info[cls].get("output_node") if cls in info else cls in OUTPUT_KINDS
        if is_output:
            found.append((cls in _PREVIEWS, {"graph_node": node_id, "kind": OUTPUT_KINDS.get(cls, "image")}))
    saved = [o for preview, o in found if not preview]
    return saved or [o for _, o in found]


def _formulas(names: set[str], params: list[dict[str, Any]]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Rough starting formulas from what the graph exposes; the operator calibrates them."""
    images = [p["name"] for p in params if p["type"] == "image"]
    guards: list[dict[str, Any]] = []
    if {"width", "height"} <= names:
        pixels = "width * height"
        guards.append({"reject_if": "width * height > 4194304",
                       "en": "The picture would have {megapixels:.1f} megapixels; the limit is 4.2. Choose a smaller width or height.",
                       "zh": "画面将达到 {megapixels:.1f} 百万像素，上限为 4.2。请减小宽度或高度。",
                       "figures": {"megapixels": "width * height / 1e6"}})
    elif images:
        pixels = f"{images[0]}_area"
        guards.append({"reject_if": f"{pixels} > 16e6",
                       "en": "The picture has {megapixels:.1f} megapixels; the limit is 16. Upload a smaller picture.",
                       "zh": "图片有 {megapixels:.1f} 百万像素，上限为 16。请上传更小的图片。",
                       "figures": {"megapixels": f"{pixels} / 1e6"}})
    else:
        pixels = "262144"
    steps = "steps" if "steps" in names else "1"
    models = any(p["type"] == "choice" and p["name"] in {m[0] for m in _MODEL_PARAMS.values()} for p in params)
    formulas = {
        "cost": f"1 + {steps} * {pixels} / 262144 / 10",
        "memory_mb": f"{4096 if models or steps != '1' else 512} + {pixels} / 262144 * 900",
        "seconds": f"3 + {steps} * {pixels} / 262144 * 0.1",
    }
    return formulas, guards


def _category(outputs: list[dict[str, str]], params: list[dict[str, Any]]) -> str:
    kinds = {o["kind"] for o in outputs}
    has_image = any(p["type"] == "image" for p in params)
    if "audio" in kinds:
        return "music"
    if "video" in kinds:
        return "image-to-video" if has_image else "text-to-video"
    if has_image:
        return "image-to-image" if any(p["name"] == "prompt" for p in params) else "tool"
    return "text-to-image"


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


@dataclass
class ImportResult:
    folder: Path
    proposal: Proposal
    #: What ``workflows check`` says about the written spec (empty when it passes).
    problems: list[str]


def import_export(export: Path, name: str, workflows_dir: Path, *, node_url: str | None = None,
                  force: bool = False) -> ImportResult:
    """Write ``workflows_dir/name`` from an API export and check it like ``workflows check``."""
    if not WORKFLOW_NAME.match(name):
        raise SpecError(f"{name!r}: a workflow name is lowercase letters, digits and '-'",
                        zh=f"{name!r}：工作流名称只能包含小写字母、数字和 '-'")
    folder = Path(workflows_dir) / name
    if folder.exists() and not force:
        raise SpecError(f"{folder} already exists (use --force to replace it)", zh=f"{folder} 已存在（使用 --force 覆盖）")
    graph = read_export(export)
    object_info = fetch_object_info(node_url) if node_url else None
    proposal = propose(graph, name, object_info)
    write_proposal(folder, graph, proposal)
    try:
        spec = load_spec(folder)
    except SpecError as exc:
        return ImportResult(folder, proposal, [str(exc)])
    problems = check_spec(spec, object_info) if object_info is not None else []
    return ImportResult(folder, proposal, [f"{folder}: {p}" for p in problems])
