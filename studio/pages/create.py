"""The Create page: pick a workflow, fill the form (beginner or expert), see the price,
create, and watch the job's progress.

Every workflow of the library gets its own form, built once and shown when its card is
picked; a library holds a handful of workflows, and fixed components keep every event
simple and stateless. File inputs are stored in the asset store as soon as they are
uploaded, and the form carries only their asset ids, which is also how "draw again"
reuses a job's inputs without a new upload.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from backend import assets, jobs
from backend.blobs import read_chunks
from backend.errors import NotFound, StudioError
from backend.submit import Accepted, NeedsConfirmation, cancel, submit
from backend.workflows import InputFacts, WorkflowSpec, quote, validate_params

from ..context import Studio, fail
from ..files import file_url
from ..i18n import lang_of, pick, t
from ..layout import header
from ..progress import Watcher
from ..render import esc, idle_card, message, price_line
from ..widgets import collect, field as make_field, file_field, form_value, mask_png, preset_choices, preset_field

ACTIVE = ("queued", "dispatched", "submitted", "running")


@dataclass
class Form:
    """The components of one workflow's form."""

    spec: WorkflowSpec
    column: gr.Column
    card: gr.Column
    tabs: gr.Tabs
    mode: gr.State
    files: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, gr.State] = field(default_factory=dict)
    stored_html: dict[str, gr.HTML] = field(default_factory=dict)
    beginner: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, gr.Radio] = field(default_factory=dict)
    expert: dict[str, Any] = field(default_factory=dict)
    price: gr.HTML | None = None
    notice: gr.HTML | None = None
    go: gr.Button | None = None
    confirm: gr.Column | None = None
    confirm_msg: gr.HTML | None = None
    queue_anyway: gr.Button | None = None
    not_now: gr.Button | None = None

    def value_inputs(self) -> set[Any]:
        return {self.mode, *self.files.values(), *self.stored.values(), *self.beginner.values(),
                *self.presets.values(), *self.expert.values()}


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    specs = list(studio.backend.library)
    watcher = Watcher(studio)
    job_state = gr.State(None)  # the job this page shows
    to_watch = gr.State(None)  # set when a job should start being watched
    key_state = gr.State(None)  # the idempotency key of the next Create click
    header(studio, demo, "create", watched=job_state)

    forms: list[Form] = []
    if not specs:
        gr.Markdown(i18n("create.no_workflows"))
        return
    gr.Markdown(i18n("create.pick"), elem_id="pick-title")
    with gr.Row(equal_height=True, elem_id="cards"):
        cards = []
        for i, spec in enumerate(specs):
            with gr.Column(elem_classes=["wf-card"] + (["selected"] if i == 0 else []), min_width=200,
                           elem_id=f"card-{spec.name}") as card:
                image = gr.HTML(_card_image(spec), elem_id=f"card-img-{spec.name}")
                gr.Markdown(i18n(f"wf.{spec.name}.title"), elem_classes=["wf-title"])
                gr.Markdown(i18n(f"wf.{spec.name}.description"), elem_classes=["wf-desc"])
                use = gr.Button(i18n("create.use"), size="sm", elem_id=f"use-{spec.name}")
            cards.append((spec, card, image, use))

    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=360):
            for i, (spec, card, _, _) in enumerate(cards):
                forms.append(_build_form(studio, spec, card, visible=i == 0))
        with gr.Column(scale=6, min_width=360):
            progress = gr.HTML(idle_card("en"), elem_id="progress", js_on_load=None)
            cancel_btn = gr.Button(i18n("create.cancel"), variant="stop", visible=False, elem_id="cancel")

    def select(name: str) -> dict[Any, Any]:
        updates: dict[Any, Any] = {}
        for form in forms:
            chosen = form.spec.name == name
            updates[form.column] = gr.update(visible=chosen)
            updates[form.card] = gr.update(elem_classes=["wf-card"] + (["selected"] if chosen else []))
        return updates

    layout_outputs = [c for form in forms for c in (form.column, form.card)]
    for spec, _, image, use in cards:
        def pick_this(name: str = spec.name) -> dict[Any, Any]:
            return select(name)
        use.click(pick_this, None, layout_outputs, api_visibility="private", show_progress="hidden")
        image.click(pick_this, None, layout_outputs, api_visibility="private", show_progress="hidden")

    for form in forms:
        _wire_form(studio, form, key_state, job_state, to_watch, progress, cancel_btn, watcher)

    def on_cancel(job_id: str | None, request: gr.Request) -> str:
        user = studio.user(request)
        if not job_id:
            return gr.skip()
        try:
            cancel(studio.backend, job_id, user_id=user.id, on_freed=studio.wake)
        except StudioError as exc:
            raise fail(exc, request) from None
        return gr.skip()

    cancel_btn.click(on_cancel, [job_state], [progress], api_name="cancel", show_progress="hidden")

    # Page load: a fresh idempotency key, preset labels in the user's language, then
    # either "draw again" (?again=<job>) or the user's running job, if any.
    all_fields = [c for form in forms for c in (*form.presets.values(), *form.beginner.values(), *form.expert.values(),
                                                 *form.files.values(), *form.stored.values(),
                                                 *form.stored_html.values(), form.tabs, form.mode)]

    def on_load(request: gr.Request) -> dict[Any, Any]:
        user = studio.user(request)
        lang = lang_of(request)
        updates: dict[Any, Any] = {key_state: uuid.uuid4().hex, progress: idle_card(lang)}
        for form in forms:
            for name, radio in form.presets.items():
                preset = form.spec.preset(name)
                assert preset is not None
                updates[radio] = gr.update(choices=preset_choices(preset, lang))
        again = request.query_params.get("again") if request.query_params else None
        if again:
            try:
                job = jobs.get(studio.backend.db, again, user_id=user.id)
            except NotFound:
                job = None
            form = next((f for f in forms if job is not None and f.spec.name == job.workflow), None)
            if job is not None and form is not None:
                updates.update(select(form.spec.name))
                updates.update(_refill(form, job, lang))
            return updates
        active = [j for j in jobs.list_for_user(studio.backend.db, user.id, limit=20) if j.state in ACTIVE]
        if active:
            updates.update({job_state: active[0].id, to_watch: active[0].id})
            updates.update(select(active[0].workflow))
        return updates

    demo.load(on_load, None, [key_state, progress, job_state, to_watch, *layout_outputs, *all_fields],
              api_visibility="private").then(
        watcher.watch, [to_watch], [progress, cancel_btn], api_visibility="private", concurrency_limit=None,
        show_progress="hidden")


def _card_image(spec: WorkflowSpec) -> str:
    if spec.example is None:
        return '<div class="wf-img"></div>'
    return f'<img class="wf-img" src="/examples/{esc(spec.name)}.png" alt="{esc(spec.title.en)}">'


def _build_form(studio: Studio, spec: WorkflowSpec, card: gr.Column, *, visible: bool) -> Form:
    i18n = studio.i18n
    with gr.Column(visible=visible, elem_id=f"form-{spec.name}") as column:
        gr.Markdown(i18n(f"wf.{spec.name}.title"), elem_classes=["form-title"])
        form = Form(spec=spec, column=column, card=card, tabs=None, mode=gr.State("beginner"))  # type: ignore[arg-type]
        for param in spec.file_params:
            form.files[param.name] = file_field(spec, param, i18n, elem_id=f"{spec.name}-{param.name}")
            form.stored[param.name] = gr.State(None)
            form.stored_html[param.name] = gr.HTML("", js_on_load=None)
        with gr.Tabs(selected="beginner", elem_id=f"tabs-{spec.name}") as tabs:
            with gr.Tab(i18n("create.beginner"), id="beginner", elem_id=f"tab-beginner-{spec.name}") as beginner_tab:
                for preset in spec.presets:
                    form.presets[preset.name] = preset_field(spec, preset, i18n, elem_id=f"{spec.name}-preset-{preset.name}")
                for param in spec.params:
                    if param.beginner and param.name not in form.files:
                        form.beginner[param.name] = make_field(spec, param, i18n, elem_id=f"{spec.name}-b-{param.name}")
            with gr.Tab(i18n("create.expert"), id="expert", elem_id=f"tab-expert-{spec.name}") as expert_tab:
                for param in spec.params:
                    if param.name not in form.files:
                        form.expert[param.name] = make_field(spec, param, i18n, elem_id=f"{spec.name}-e-{param.name}")
        form.tabs = tabs
        form.price = gr.HTML("", elem_id=f"price-{spec.name}", js_on_load=None)
        form.notice = gr.HTML("", elem_id=f"notice-{spec.name}", js_on_load=None)
        with gr.Column(visible=False, elem_id=f"confirm-{spec.name}", elem_classes=["confirm-box"]) as confirm:
            form.confirm_msg = gr.HTML("", js_on_load=None)
            with gr.Row():
                form.queue_anyway = gr.Button(i18n("create.queue_anyway"), variant="primary",
                                              elem_id=f"queue-anyway-{spec.name}")
                form.not_now = gr.Button(i18n("create.never_mind"), elem_id=f"not-now-{spec.name}")
        form.confirm = confirm
        form.go = gr.Button(i18n("create.go"), variant="primary", size="lg", elem_id=f"go-{spec.name}")
    beginner_tab.select(lambda: "beginner", None, form.mode, api_visibility="private", show_progress="hidden")
    expert_tab.select(lambda: "expert", None, form.mode, api_visibility="private", show_progress="hidden")
    return form


def _wire_form(studio: Studio, form: Form, key_state: gr.State, job_state: gr.State, to_watch: gr.State,
               progress: gr.HTML, cancel_btn: gr.Button, watcher: Watcher) -> None:
    spec, db, settings = form.spec, studio.backend.db, studio.backend.settings

    for name, upload in form.files.items():
        param = spec.param(name)
        assert param is not None
        if param.type == "mask":
            continue  # stored when the job is created: the strokes change until then

        def store(path: str | None, request: gr.Request, _name: str = name) -> tuple[Any, str]:
            user = studio.user(request)
            if not path:
                return None, ""
            try:
                with open(path, "rb") as fh:
                    record = assets.store_upload(db, studio.backend.blobs, user.id, read_chunks(fh),
                                                 name=os.path.basename(path), max_bytes=settings.max_upload_bytes,
                                                 max_pixels=settings.max_image_pixels)
            except StudioError as exc:
                raise fail(exc, request) from None
            return record.id, ""

        upload.upload(store, [upload], [form.stored[name], form.stored_html[name]], api_visibility="private")
        upload.clear(lambda: (None, ""), None, [form.stored[name], form.stored_html[name]], api_visibility="private")
        for other, editor in form.files.items():
            other_param = spec.param(other)
            if other_param is not None and other_param.type == "mask":
                # The mask is painted over the image it applies to.
                upload.upload(lambda p: {"background": p, "layers": [], "composite": p} if p else None,
                              [upload], [editor], api_visibility="private")

    def files_and_facts(data: dict[Any, Any], user_id: int | None) -> tuple[dict[str, str | None], dict[str, InputFacts]]:
        """Asset ids per file parameter (masks are stored here when ``user_id`` is given)."""
        ids: dict[str, str | None] = {}
        facts: dict[str, InputFacts] = {}
        for name in form.files:
            param = spec.param(name)
            assert param is not None
            if param.type == "mask":
                value = data[form.files[name]]
                background = (value or {}).get("background")
                if background is None:
                    ids[name] = None
                    continue
                facts[name] = InputFacts(width=background.width, height=background.height)
                png = mask_png(value)
                if user_id is not None and png is not None:
                    record = assets.store_upload(db, studio.backend.blobs, user_id, [png], name="mask.png",
                                                 max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
                    ids[name] = record.id
                else:
                    ids[name] = "pending" if png is not None else None
                continue
            asset_id = data[form.stored[name]]
            ids[name] = asset_id
            if asset_id:
                record = assets.get_asset(db, asset_id)
                facts[name] = InputFacts(width=record.width or 0, height=record.height or 0, seconds=record.seconds or 0.0)
        return ids, facts

    def raw_params(data: dict[Any, Any], ids: dict[str, str | None]) -> tuple[dict[str, Any], bool]:
        expert = data[form.mode] == "expert"
        fields = form.expert if expert else form.beginner
        values = {name: data[c] for name, c in fields.items()}
        presets = {name: data[c] for name, c in form.presets.items()}
        return collect(spec, expert=expert, values=values, presets=presets, files=ids), expert

    def price(data: dict[Any, Any], request: gr.Request) -> str:
        studio.user(request)
        lang = lang_of(request)
        ids, facts = files_and_facts(data, None)
        missing = [p for p in spec.file_params if not ids.get(p.name)]
        if missing:
            return price_line(lang, hint=t("create.need_input", lang, label=missing[0].label.get(lang)))
        raw, expert = raw_params(data, ids)
        try:
            values = validate_params(spec, raw, expert=expert)
            priced = quote(spec, values, facts)
        except StudioError as exc:
            return price_line(lang, error=exc.text(lang))
        warn = priced.rejection.get(lang) if priced.rejection is not None else ""
        return price_line(lang, cost=priced.cost, seconds=priced.seconds, warn=warn)

    triggers = [c.change for c in (*form.beginner.values(), *form.presets.values(), *form.expert.values(),
                                    *form.stored.values())]
    triggers += [form.mode.change]
    triggers += [form.files[n].change for n in form.files if (spec.param(n) or form).type == "mask"]  # type: ignore[union-attr]
    gr.on(triggers, price, form.value_inputs(), form.price, api_visibility="private", show_progress="hidden",
          trigger_mode="always_last")

    start_outputs = [job_state, to_watch, key_state, form.confirm, form.confirm_msg, form.notice, progress, cancel_btn]

    def start(data: dict[Any, Any], request: gr.Request, *, queue_if_busy: bool) -> dict[Any, Any]:
        user = studio.user(request)
        lang = lang_of(request)
        key = data[key_state] or uuid.uuid4().hex
        hidden = gr.update(visible=False)
        try:
            ids, _ = files_and_facts(data, user.id)
        except StudioError as exc:
            return {form.notice: message("error", exc.text(lang)), form.confirm: hidden, to_watch: None}
        raw, expert = raw_params(data, ids)
        result = submit(studio.backend, user.id, spec.name, raw, idempotency_key=key, expert=expert,
                        queue_if_busy=queue_if_busy, on_queued=studio.wake)
        if isinstance(result, Accepted):
            return {job_state: result.job.id, to_watch: result.job.id, key_state: uuid.uuid4().hex,
                    form.confirm: hidden, form.notice: "", cancel_btn: gr.update(visible=True)}
        if isinstance(result, NeedsConfirmation):
            return {form.confirm: gr.update(visible=True), to_watch: None, form.notice: "",
                    form.confirm_msg: message("warn", pick(result.message, lang), elem_id="busy-message")}
        return {form.notice: message("error", pick(result.message, lang), elem_id="rejection"), form.confirm: hidden,
                to_watch: None}

    def create(data: dict[Any, Any], request: gr.Request) -> dict[Any, Any]:
        return start(data, request, queue_if_busy=False)

    def create_confirmed(data: dict[Any, Any], request: gr.Request) -> dict[Any, Any]:
        return start(data, request, queue_if_busy=True)

    inputs = form.value_inputs() | {key_state}
    for button, fn, api_name in ((form.go, create, f"create_{spec.name}"),
                                 (form.queue_anyway, create_confirmed, f"create_{spec.name}_confirmed")):
        button.click(fn, inputs, start_outputs, api_name=api_name.replace("-", "_"), show_progress="minimal").then(
            watcher.watch, [to_watch], [progress, cancel_btn], api_visibility="private", concurrency_limit=None,
            show_progress="hidden")
    form.not_now.click(lambda: gr.update(visible=False), None, form.confirm, api_visibility="private")


def _refill(form: Form, job: jobs.Job, lang: str) -> dict[Any, Any]:
    """Form values for "draw again": the job's parameters and its stored inputs."""
    spec, params = form.spec, dict(job.params)
    updates: dict[Any, Any] = {}
    for name, state in form.stored.items():
        asset_id = job.inputs.get(name)
        updates[state] = asset_id
        updates[form.files[name]] = None
        if asset_id:
            updates[form.stored_html[name]] = (
                f'<div class="stored-input" id="stored-{esc(name)}"><img src="{file_url(asset_id)}" alt="">'
                f"<span>{esc(t('create.stored_input', lang))}</span></div>")
    for name, component in (*form.beginner.items(), *form.expert.items()):
        param = spec.param(name)
        if param is not None and name in params:
            updates[component] = form_value(param, params[name])
    for name, radio in form.presets.items():
        if name in params:
            updates[radio] = gr.update(value=params[name])
    mode = "beginner" if _beginner_reproduces(spec, params, form.files.keys()) else "expert"
    updates[form.tabs] = gr.Tabs(selected=mode)
    updates[form.mode] = mode
    return updates


def _beginner_reproduces(spec: WorkflowSpec, params: dict[str, Any], files: Iterable[str]) -> bool:
    """Whether the beginner fields and presets alone give the job's parameters."""
    raw = {p.name: params[p.name] for p in spec.params if p.beginner and p.name in params}
    raw.update({p.name: params[p.name] for p in spec.presets if p.name in params})
    try:
        return validate_params(spec, raw, expert=False) == params
    except StudioError:
        return False
