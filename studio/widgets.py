"""Form fields for workflow parameters, and turning their values back into parameters.

One component per parameter type; labels are keys into the browser-side i18n table
(:func:`studio.i18n.build_i18n`) so they follow the page's language without a round
trip. Preset option labels are per language and set when the page loads.

Every control is created with ``interactive=True``. Gradio infers interactivity in the
browser from whether a component is an event input, but the form is built by
``@gr.render``, and Gradio 6.31's frontend lays out a render's new components without
adding the render's new events to that inference (``AppTree.rerender`` skips
``prepare()``). A control with a non-empty value (a slider at 20, a chosen radio) was
therefore shown disabled; only empty text boxes worked.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Literal

import gradio as gr
from PIL import Image

from backend.images import decoded, probe_image
from backend.workflows import Param, Preset, WorkflowSpec

from .file_inputs import ImageUpload, MaskCanvas

#: Sliders only for ranges a hand can set; seeds and huge ranges get a number box.
MAX_SLIDER_SPAN = 10_000


def _label(spec: WorkflowSpec, param: Param, i18n: gr.I18n) -> Any:
    return i18n(f"wf.{spec.name}.param.{param.name}")


def _info(spec: WorkflowSpec, param: Param, i18n: gr.I18n) -> Any:
    return i18n(f"wf.{spec.name}.help.{param.name}") if param.help is not None else None


#: "No value given": the parameter's default.
DEFAULT: Any = object()


def field(spec: WorkflowSpec, param: Param, i18n: gr.I18n, *, elem_id: str, value: Any = DEFAULT) -> gr.components.Component:
    """The input component for one non-file parameter, holding ``value`` (or its default)."""
    label, info = _label(spec, param, i18n), _info(spec, param, i18n)
    default = param.default if value is DEFAULT else value
    if param.type in ("int", "float"):
        low, high = param.min, param.max
        if low is not None and high is not None and high - low <= MAX_SLIDER_SPAN:
            step = param.step or (1 if param.type == "int" else 0.01)
            return gr.Slider(minimum=low, maximum=high, step=step, value=default, label=label,
                             info=info, elem_id=elem_id, interactive=True)
        return gr.Number(value=default, label=label, info=info, precision=0 if param.type == "int" else None,
                         minimum=param.min, maximum=param.max, elem_id=elem_id, interactive=True)
    if param.type == "seed":
        return gr.Number(value=default, label=label, info=info, precision=0, elem_id=elem_id, interactive=True,
                         scale=4)
    if param.type == "bool":
        return gr.Checkbox(value=bool(default), label=label, info=info, elem_id=elem_id, interactive=True)
    if param.type == "choice":
        return gr.Dropdown(choices=list(param.options), value=default, label=label, info=info, elem_id=elem_id,
                           interactive=True)
    lines = 3 if param.type == "text" else 1
    return gr.Textbox(value=default or "", label=label, info=info, lines=lines, max_lines=12,
                      max_length=param.max_length, elem_id=elem_id, interactive=True)


def preset_field(spec: WorkflowSpec, preset: Preset, i18n: gr.I18n, *, elem_id: str, lang: str = "en",
                 value: Any = DEFAULT) -> gr.Radio:
    return gr.Radio(choices=preset_choices(preset, lang), value=preset.default if value is DEFAULT else value,
                    label=i18n(f"wf.{spec.name}.preset.{preset.name}"), elem_id=elem_id, interactive=True)


def preset_choices(preset: Preset, lang: str) -> list[tuple[str, str]]:
    return [(option.label.get(lang), option.name) for option in preset.options]


def file_field(spec: WorkflowSpec, param: Param, i18n: gr.I18n, *, elem_id: str,
               value: Any = None) -> gr.components.Component:
    """An image upload, or a drawing canvas for a mask (the painted area is what changes).

    A mask drawn on another image parameter (``mask_of``) gets that picture as its
    background when it is uploaded, so its canvas takes no uploads of its own. Neither
    decodes anything: the handler gets paths and checks the files first
    (:mod:`studio.file_inputs`).
    """
    label = _label(spec, param, i18n)
    if param.type == "mask":
        sources: tuple[Literal["upload", "clipboard"], ...] = () if param.mask_of else ("upload", "clipboard")
        # image_mode None keeps the file's own mode (Gradio's hint leaves None out).
        return MaskCanvas(value=value, type="filepath", image_mode=None,  # type: ignore[arg-type]
                          layers=False, label=label, elem_id=elem_id, sources=sources,
                          brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24),
                          transforms=(), height=420)
    if param.type == "image":
        return ImageUpload(type="filepath", image_mode=None, sources=["upload", "clipboard"], label=label,
                           elem_id=elem_id, height=300)
    return gr.File(label=label, elem_id=elem_id, type="filepath")


def form_value(param: Param, value: Any) -> Any:
    """A stored parameter value as its component wants it (the reverse of collecting)."""
    if param.type in ("int", "seed") and isinstance(value, (int, float)):
        return int(value)
    return value


def collect(spec: WorkflowSpec, *, values: Mapping[str, Any], presets: Mapping[str, Any],
            files: Mapping[str, str | None]) -> dict[str, Any]:
    """The raw parameters for :func:`backend.jobs.submit.submit` (expert mode) from the form.

    Every field is sent as shown, so explicit values win over presets; the chosen preset
    options go along so the job records them (and "draw again" shows them chosen). File
    parameters carry asset ids. An empty optional number means "its default".
    """
    raw: dict[str, Any] = {}
    for param in spec.params:
        if param.name in files:
            if files[param.name]:
                raw[param.name] = files[param.name]
        elif param.name in values:
            value = values[param.name]
            if value is None or (value == "" and not param.required and param.type not in ("string", "text")):
                continue
            raw[param.name] = value
    raw.update({name: value for name, value in presets.items() if value})
    return raw


def mask_png(layer: bytes | None, *, size: tuple[int, int] | None, max_bytes: int, max_pixels: int) -> bytes | None:
    """The painted strokes of a mask canvas's layer as the mask file the nodes expect.

    That is ComfyUI's own mask format (docs/workflows.md, masks): an RGBA PNG whose
    **painted area is transparent (alpha 0)** and the rest opaque, the size of the
    picture it applies to (``size``, else the layer's). ``layer`` is the PNG the canvas
    uploaded; it is checked like any upload (size, header, pixel limit) and decoded
    within the decode budget, which also covers the mask being made. None when nothing
    was painted.
    """
    if not layer:
        return None
    header = probe_image(layer, max_bytes=max_bytes, max_pixels=max_pixels)
    target = tuple(size) if size else (header.width, header.height)
    # While the layer is decoded: its alpha and the inverted alpha (1 byte per pixel
    # each), the resized alpha and the RGBA mask (5 bytes per pixel of the picture).
    extra = 2 * header.width * header.height + 5 * target[0] * target[1]
    with decoded(layer, max_bytes=max_bytes, max_pixels=max_pixels, extra_bytes=extra) as im:
        painted = im.getchannel("A") if "A" in im.getbands() else Image.new("L", im.size, 255)
        im.close()
        alpha = painted.point(lambda v: 0 if v else 255)  # painted: transparent
        del painted
        if alpha.getextrema() == (255, 255):
            return None
        if alpha.size != target:
            alpha = alpha.resize((target[0], target[1]), Image.Resampling.NEAREST)
        mask = Image.new("RGBA", alpha.size, (0, 0, 0, 255))
        mask.putalpha(alpha)
        del alpha
        out = io.BytesIO()
        mask.save(out, format="PNG")
    return out.getvalue()
