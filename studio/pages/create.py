"""The Create page: pick a workflow, fill the form (beginner or expert), see the price,
create, and watch the job's progress.

Only the chosen workflow's form exists: an ``@gr.render`` keyed on the selection (a
``gr.State`` holding the workflow, the page language and, for "draw again", the earlier
job's parameters and inputs) builds it, with its events, for this browser session. A
library of ~20 workflows therefore costs one form on page load instead of twenty (the
page used to ship 600+ components and 200+ listeners and took ~14 s to become usable).

File inputs are stored in the asset store as soon as they are uploaded, and the form
carries only their asset ids, which is also how "draw again" reuses a job's inputs
without a new upload. A drawn mask is stored when the job is created, as a PNG the size
of its picture whose painted area is transparent (docs/workflows.md, masks).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from backend import assets, jobs
from backend.assets.blobs import read_chunks
from backend.jobs import limits as user_limits
from backend.errors import NotFound, StudioError
from backend.assets.images import probe_image
from backend.jobs.submit import Accepted, NeedsConfirmation, cancel, submit
from backend.workflows import InputFacts, Param, WorkflowSpec, quote, validate_params
from backend.jobs.state import ACTIVE

from ..context import Studio, fail
from ..file_inputs import mask_value
from ..files import file_url
from ..i18n import error_text, lang_of, pick, t
from ..layout import header
from ..progress import Watcher
from ..render import esc, idle_card, message, price_line
from ..uploads import session_token
from ..widgets import DEFAULT, collect, file_field, form_value, mask_png, preset_field
from ..widgets import field as make_field



@dataclass
class Form:
    """The components of the chosen workflow's form (built per session by the render).

    Every parameter has exactly one control: the beginner ones above the tabs, the
    others in the Expert tab; the Beginner tab holds the presets, which write their
    values into those controls. The two tabs are two views of one set of values, and
    a job is always submitted with every value as the form shows it.
    """

    spec: WorkflowSpec
    files: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, gr.State] = field(default_factory=dict)
    stored_html: dict[str, gr.HTML] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, gr.Radio] = field(default_factory=dict)
    seeds: dict[str, gr.Button] = field(default_factory=dict)
    price: Any = None
    notice: Any = None
    go: Any = None
    confirm: Any = None
    confirm_msg: Any = None
    queue_anyway: Any = None
    not_now: Any = None

    def value_inputs(self) -> set[Any]:
        return {*self.files.values(), *self.stored.values(), *self.fields.values(), *self.presets.values()}


def selection(workflow: str, lang: str, again: dict[str, Any] | None = None) -> dict[str, Any]:
    """The value of the page's selection state; a new value re-renders the form."""
    return {"workflow": workflow, "lang": lang, "again": again, "nonce": uuid.uuid4().hex if again else None}


#: The order of the chooser: what most people come for first.
CATEGORY_ORDER = ("text-to-image", "image-to-image", "photography", "upscale", "text-to-video", "music", "tool")

# Runs in the browser when a workflow is chosen: the form (re-rendered by the server a
# moment later) is where the user goes next, also on a phone below a row of cards.
SCROLL_TO_FORM = """(x) => { const f = document.getElementById('form-area');
  if (f) f.scrollIntoView({behavior: 'smooth', block: 'start'}); return x; }"""


def card_order(specs: Iterable[WorkflowSpec]) -> list[WorkflowSpec]:
    rank = {category: i for i, category in enumerate(CATEGORY_ORDER)}
    return sorted(specs, key=lambda s: (rank.get(s.category, len(rank)), s.name))


def landing_workflow(studio: Studio, user_id: int, specs: list[WorkflowSpec]) -> str:
    """The workflow the page opens on: the user's most used one, else the first card."""
    names = {spec.name for spec in specs}
    for name in jobs.most_used_workflows(studio.backend.db, user_id):
        if name in names:
            return name
    return specs[0].name


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    library = studio.backend.library
    specs = card_order(library)
    watcher = Watcher(studio)
    job_state = gr.State(None)  # the job this page shows
    to_watch = gr.State(None)  # set when a job should start being watched
    key_state = gr.State(None)  # the idempotency key of the next Create click
    head = header(studio, demo, "create", watched=job_state)

    if not specs:
        gr.Markdown(i18n("create.no_workflows"))
        return
    sel = gr.State(None)
    gr.Markdown(i18n("create.pick"), elem_id="pick-title")
    with gr.Row(equal_height=True, elem_id="cards"):
        cards = []
        for spec in specs:
            with gr.Column(elem_classes=["wf-card"], min_width=160, elem_id=f"card-{spec.name}") as card:
                image = gr.HTML(_card_image(spec), elem_id=f"card-img-{spec.name}")
                gr.Markdown(i18n(f"wf.{spec.name}.title"), elem_classes=["wf-title"])
                gr.Markdown(i18n(f"wf.{spec.name}.description"), elem_classes=["wf-desc"])
                use = gr.Button(i18n("create.use"), size="sm", elem_id=f"use-{spec.name}")
            cards.append((spec, card, image, use))
    card_columns = [card for _, card, _, _ in cards]

    def card_updates(name: str) -> list[Any]:
        return [gr.update(elem_classes=["wf-card"] + (["selected"] if spec.name == name else []))
                for spec, _, _, _ in cards]

    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320, elem_id="form-area"):

            @gr.render(inputs=[sel], triggers=[sel.change], show_progress="hidden")
            def the_form(chosen: dict[str, Any] | None) -> None:
                if not chosen or chosen.get("workflow") not in library:
                    return
                spec = library.get(chosen["workflow"])
                lang = chosen.get("lang") or "en"
                form = _build_form(studio, spec, lang, chosen.get("again"))
                _wire_form(studio, form, key_state, job_state, to_watch, progress, cancel_btn)

        with gr.Column(scale=6, min_width=320):
            progress = gr.HTML(idle_card("en"), elem_id="progress", js_on_load=None)
            cancel_btn = gr.Button(i18n("create.cancel"), variant="stop", visible=False, elem_id="cancel")

    for spec, _, image, use in cards:
        def pick_this(current: dict[str, Any] | None, request: gr.Request, name: str = spec.name) -> list[Any]:
            studio.user(request)
            if current and current.get("workflow") == name and not current.get("again"):
                return [gr.skip(), *card_updates(name)]
            return [selection(name, lang_of(request)), *card_updates(name)]
        for clicked in (use, image):
            clicked.click(pick_this, [sel], [sel, *card_columns], api_visibility="private", show_progress="hidden",
                          js=SCROLL_TO_FORM)

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

    # Page load: a fresh idempotency key, then the form to show: "draw again"
    # (?again=<job>) refilled with that job, or the workflow of the user's running job
    # (which is then watched), or the user's most used workflow.
    def on_load(request: gr.Request) -> list[Any]:
        user = studio.user(request)
        lang = lang_of(request)
        key, watch, chosen = uuid.uuid4().hex, None, None
        again_data = None
        again = request.query_params.get("again") if request.query_params else None
        if again:
            try:
                job = jobs.get(studio.backend.db, again, user_id=user.id)
            except NotFound:
                job = None
            if job is not None and job.workflow in library:
                chosen = job.workflow
                again_data = {"job": job.id, "params": dict(job.params), "inputs": dict(job.inputs)}
        else:
            active = [j for j in jobs.list_for_user(studio.backend.db, user.id, limit=20) if j.state in ACTIVE]
            if active and active[0].workflow in library:
                watch, chosen = active[0].id, active[0].workflow
        chosen = chosen or landing_workflow(studio, user.id, specs)
        return [key, idle_card(lang), watch, watch, selection(chosen, lang, again_data), *card_updates(chosen)]

    demo.load(on_load, None, [key_state, progress, job_state, to_watch, sel, *card_columns],
              api_visibility="private", show_progress="hidden")
    # Watching is its own event, started whenever a job is to be watched: the Create
    # click returns at once (its button is usable again), and a newer watch replaces
    # the running one ("multiple": the old generator notices and ends).
    to_watch.change(watcher.watch, [to_watch], [progress, cancel_btn, head.nav], api_visibility="private",
                    concurrency_limit=None, show_progress="hidden", trigger_mode="multiple")


def _card_image(spec: WorkflowSpec) -> str:
    if spec.example is None:
        return '<div class="wf-img"></div>'
    return f'<img class="wf-img" src="/examples/{esc(spec.name)}.png" alt="{esc(spec.title.en)}">'


def _stored_html(asset_id: str | None, lang: str, name: str, *, mask: bool = False) -> str:
    if not asset_id:
        return ""
    if mask:  # the mask file itself is mostly black: say so instead of showing it
        return f'<div class="stored-input" id="stored-{esc(name)}"><span>{esc(t("create.stored_mask", lang))}</span></div>'
    return (f'<div class="stored-input" id="stored-{esc(name)}"><img src="{file_url(asset_id)}" alt="">'
            f"<span>{esc(t('create.stored_input', lang))}</span></div>")


def _build_form(studio: Studio, spec: WorkflowSpec, lang: str, again: dict[str, Any] | None) -> Form:
    """The form's components, holding the defaults or, for "draw again", the job's values."""
    i18n = studio.i18n
    params = dict((again or {}).get("params") or {})
    inputs = dict((again or {}).get("inputs") or {})
    file_names = {p.name for p in spec.file_params}
    mode = "beginner"
    if again:
        mode = "beginner" if _beginner_reproduces(spec, params, file_names) else "expert"

    def value_of(name: str) -> Any:
        param = spec.param(name)
        return form_value(param, params[name]) if param is not None and name in params else DEFAULT

    def add_field(param: Param) -> None:
        if param.type != "seed":
            form.fields[param.name] = make_field(spec, param, i18n, elem_id=f"p-{param.name}", value=value_of(param.name))
            return
        with gr.Row(equal_height=True, elem_classes=["seed-row"]):
            form.fields[param.name] = make_field(spec, param, i18n, elem_id=f"p-{param.name}", value=value_of(param.name))
            form.seeds[param.name] = gr.Button(i18n("create.new_seed"), size="sm", scale=1, min_width=120,
                                               elem_id=f"new-{param.name}")

    with gr.Column(elem_id=f"form-{spec.name}", elem_classes=["studio-form"]):
        gr.Markdown(i18n(f"wf.{spec.name}.title"), elem_classes=["form-title"])
        form = Form(spec=spec)
        for param in spec.file_params:
            stored_id = inputs.get(param.name)
            form.files[param.name] = file_field(spec, param, i18n, elem_id=f"in-{param.name}")
            form.stored[param.name] = gr.State(stored_id)
            form.stored_html[param.name] = gr.HTML(_stored_html(stored_id, lang, param.name, mask=param.type == "mask"),
                                                   js_on_load=None,
                                                   elem_id=f"stored-html-{param.name}")
        for param in spec.params:
            if param.beginner and param.name not in file_names:
                add_field(param)
        expert_only = [p for p in spec.params if not p.beginner and p.name not in file_names]
        with gr.Tabs(selected=mode, elem_id="mode-tabs"):
            with gr.Tab(i18n("create.beginner"), id="beginner", elem_id="tab-beginner"):
                for preset in spec.presets:
                    form.presets[preset.name] = preset_field(spec, preset, i18n, elem_id=f"preset-{preset.name}",
                                                             lang=lang, value=params.get(preset.name, DEFAULT))
                if not spec.presets:
                    gr.Markdown(i18n("create.no_presets"), elem_classes=["hint"])
            with gr.Tab(i18n("create.expert"), id="expert", elem_id="tab-expert"):
                for param in expert_only:
                    add_field(param)
                if not expert_only:
                    gr.Markdown(i18n("create.no_expert"), elem_classes=["hint"])
        form.price = gr.HTML(_initial_price(studio, form, lang, params, inputs), elem_id="price-line",
                             js_on_load=None)
        form.notice = gr.HTML("", elem_id="notice", js_on_load=None)
        with gr.Column(visible=False, elem_id="confirm", elem_classes=["confirm-box"]) as confirm:
            form.confirm_msg = gr.HTML("", js_on_load=None)
            with gr.Row():
                form.queue_anyway = gr.Button(i18n("create.queue_anyway"), variant="primary", elem_id="queue-anyway")
                form.not_now = gr.Button(i18n("create.never_mind"), elem_id="not-now")
        form.confirm = confirm
        form.go = gr.Button(i18n("create.go"), variant="primary", size="lg", elem_id="go")
    return form


def _initial_price(studio: Studio, form: Form, lang: str, params: dict[str, Any], inputs: dict[str, str]) -> str:
    """The price line of a freshly built form (its fields' change events have not fired)."""
    spec = form.spec
    ids = {p.name: inputs.get(p.name) for p in spec.file_params}
    missing = [p for p in spec.file_params if not ids.get(p.name)]
    if missing:
        return price_line(lang, hint=t("create.need_input", lang, label=missing[0].label.get(lang)))
    facts = {}
    for name, asset_id in ids.items():
        try:
            record = assets.get_asset(studio.backend.db, str(asset_id))
        except NotFound:
            return price_line(lang, hint=t("create.need_input", lang, label=spec.param(name).label.get(lang)))  # type: ignore[union-attr]
        facts[name] = InputFacts(width=record.width or 0, height=record.height or 0, seconds=record.seconds or 0.0)
    values = {name: params.get(name, _default(spec, name)) for name in form.fields}
    presets = {p.name: params.get(p.name, p.default) for p in spec.presets}
    return _price(spec, collect(spec, values=values, presets=presets, files=ids), facts, lang)


def _default(spec: WorkflowSpec, name: str) -> Any:
    param = spec.param(name)
    return None if param is None else param.default


def _price(spec: WorkflowSpec, raw: dict[str, Any], facts: dict[str, InputFacts], lang: str) -> str:
    """The price of what the form holds. A required text still empty does not hide the
    price (no formula reads text); it is a hint, not an error, until Create is pressed."""
    blank = [p for p in spec.params if p.required and p.type in ("string", "text") and not str(raw.get(p.name) or "").strip()]
    try:
        values = validate_params(spec, {**raw, **{p.name: PRICE_PLACEHOLDER for p in blank}}, expert=True)
        priced = quote(spec, values, facts)
    except StudioError as exc:
        return price_line(lang, error=error_text(exc, lang))
    warn = priced.rejection.get(lang) if priced.rejection is not None else ""
    hint = t("create.need_text", lang, label=blank[0].label.get(lang)) if blank else ""
    return price_line(lang, cost=priced.cost, seconds=priced.seconds, warn=warn, hint=hint)


#: Stands in for a required text the creator has not written yet, only to price the job.
PRICE_PLACEHOLDER = "-"


def _wire_form(studio: Studio, form: Form, key_state: gr.State, job_state: gr.State, to_watch: gr.State,
               progress: gr.HTML, cancel_btn: gr.Button) -> None:
    spec, events = form.spec, _FormEvents(studio, form, key_state, job_state, to_watch, cancel_btn)
    for name, upload in form.files.items():
        param = spec.param(name)
        assert param is not None
        if param.type == "mask":
            continue  # stored when the job is created: the strokes change until then
        outputs = [form.stored[name], form.stored_html[name]]
        mask = events.masks_of.get(name)
        if mask:
            outputs += [form.files[mask], form.stored[mask], form.stored_html[mask]]
        upload.upload(_FileUpload(events, name).store, [upload], outputs, api_visibility="private",
                      show_progress="hidden").then(
            events.price, form.value_inputs(), form.price, api_visibility="private", show_progress="hidden")
        upload.clear(lambda: (None, ""), None, [form.stored[name], form.stored_html[name]], api_visibility="private",
                     show_progress="hidden").then(
            events.price, form.value_inputs(), form.price, api_visibility="private", show_progress="hidden")

    triggers = [c.change for c in (*form.fields.values(), *form.presets.values(), *form.stored.values())]
    for name, editor in form.files.items():
        if (spec.param(name) or form).type == "mask":  # type: ignore[union-attr]
            triggers += [editor.change, editor.input, editor.apply]
    gr.on(triggers, events.price, form.value_inputs(), form.price, api_visibility="private", show_progress="hidden",
          trigger_mode="always_last")
    _wire_presets(form)
    for name, button in form.seeds.items():
        # "New seed": -1 asks for a random seed when the job is created (it records the one used).
        button.click(None, None, form.fields[name], js="() => -1", api_visibility="private", show_progress="hidden")

    # The form exists per session, so its events are not a stable public API: private.
    # The progress card is the one progress indicator: Gradio's overlay stays hidden.
    start_outputs = [job_state, to_watch, key_state, form.confirm, form.confirm_msg, form.notice, progress, cancel_btn]
    inputs = form.value_inputs() | {key_state}
    for button, fn in ((form.go, events.create), (form.queue_anyway, events.create_confirmed)):
        button.click(fn, inputs, start_outputs, api_visibility="private", show_progress="hidden")
    form.not_now.click(lambda: gr.update(visible=False), None, form.confirm, api_visibility="private",
                       show_progress="hidden")


class _FormEvents:
    """What the events of one session's form do: store an upload, price, create the job.

    Gradio finds the ``gr.Request`` parameter of a handler by its type hint, so every
    handler here is a plain method whose hints resolve at module level (a
    ``functools.partial`` or a lambda would hide them and the request would not come).
    """

    def __init__(self, studio: Studio, form: Form, key_state: gr.State, job_state: gr.State, to_watch: gr.State,
                 cancel_btn: gr.Button) -> None:
        self.studio, self.form, self.spec = studio, form, form.spec
        self.db, self.settings = studio.backend.db, studio.backend.settings
        self.key_state, self.job_state, self.to_watch, self.cancel_btn = key_state, job_state, to_watch, cancel_btn
        #: picture parameter -> the mask parameter drawn on it
        self.masks_of = {p.mask_of: p.name for p in self.spec.file_params if p.type == "mask" and p.mask_of}

    def store(self, name: str, path: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Store the file just uploaded for parameter ``name``; its asset id for the form."""
        studio, db, settings = self.studio, self.db, self.settings
        user = studio.user(request)
        mask = self.masks_of.get(name)
        if not path:
            return (None, "") + ((gr.skip(), gr.skip(), gr.skip()) if mask else ())
        try:
            source = studio.uploads.path(path, session_token(request))  # before anything opens it
            user_limits.check_storage(db, settings, user.id, source.stat().st_size)
            with open(source, "rb") as fh:
                record = assets.store_upload(db, studio.backend.blobs, user.id, read_chunks(fh),
                                             name=source.name, max_bytes=settings.max_upload_bytes,
                                             max_pixels=settings.max_image_pixels)
        except StudioError as exc:
            raise fail(exc, request) from None
        if not mask:
            return record.id, ""
        # A new picture: the mask is painted over it afresh; a stored mask no longer fits.
        picture = str(source)
        return record.id, "", {"background": picture, "layers": [], "composite": picture}, None, ""

    def _owned(self, user_id: int, asset_id: str) -> assets.AssetRecord:
        if not assets.user_can_read(self.db, user_id, asset_id):
            raise NotFound("That file is not among yours.", zh="该文件不属于您。")
        return assets.get_asset(self.db, asset_id)

    def _files_and_facts(self, data: dict[Any, Any], request: gr.Request, *, store: bool
                         ) -> tuple[dict[str, str | None], dict[str, InputFacts]]:
        """Asset ids per file parameter (masks are stored here when ``store``).

        Canvas files are read only if they are uploads of this session, and checked
        before they are decoded (:func:`studio.widgets.mask_png`).
        """
        studio, form, settings = self.studio, self.form, self.settings
        user = studio.user(request)
        token = session_token(request)
        limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
        ids: dict[str, str | None] = {}
        facts: dict[str, InputFacts] = {}
        for name in form.files:
            param = self.spec.param(name)
            assert param is not None
            stored = data[form.stored[name]]
            if param.type == "mask":
                value = mask_value(data[form.files[name]])
                size = None
                if value["background"] is not None:
                    if param.mask_of and data.get(form.stored.get(param.mask_of)):  # type: ignore[arg-type]
                        picture = self._owned(user.id, data[form.stored[param.mask_of]])
                        size = (picture.width or 0, picture.height or 0)
                    else:
                        header = probe_image(studio.uploads.read(value["background"], token), **limits)
                        size = (header.width, header.height)
                layer = studio.uploads.read(value["layers"][0], token) if value["layers"] and size else None
                png = mask_png(layer, size=size, **limits) if layer is not None else None
                if png is not None and size is not None:
                    facts[name] = InputFacts(width=size[0], height=size[1])
                    if store:  # a drawn mask is an upload too: it counts against the storage quota
                        user_limits.check_storage(self.db, self.settings, user.id, len(png))
                        record = assets.store_upload(self.db, studio.backend.blobs, user.id, [png], name="mask.png",
                                                     **limits)
                        ids[name] = record.id
                    else:
                        ids[name] = "pending"
                    continue
                if stored:  # "draw again" without new strokes: the job's stored mask
                    record = self._owned(user.id, stored)
                    ids[name] = stored
                    facts[name] = InputFacts(width=record.width or 0, height=record.height or 0)
                else:
                    ids[name] = None
                continue
            ids[name] = stored
            if stored:
                record = self._owned(user.id, stored)
                facts[name] = InputFacts(width=record.width or 0, height=record.height or 0, seconds=record.seconds or 0.0)
        return ids, facts

    def _raw_params(self, data: dict[Any, Any], ids: dict[str, str | None]) -> dict[str, Any]:
        values = {name: data[c] for name, c in self.form.fields.items()}
        presets = {name: data[c] for name, c in self.form.presets.items()}
        return collect(self.spec, values=values, presets=presets, files=ids)

    def price(self, data: dict[Any, Any], request: gr.Request) -> str:
        self.studio.user(request)
        lang = lang_of(request)
        try:
            ids, facts = self._files_and_facts(data, request, store=False)
        except StudioError as exc:
            return price_line(lang, error=exc.text(lang))
        missing = [p for p in self.spec.file_params if not ids.get(p.name)]
        if missing:
            return price_line(lang, hint=t("create.need_input", lang, label=missing[0].label.get(lang)))
        return _price(self.spec, self._raw_params(data, ids), facts, lang)

    def create(self, data: dict[Any, Any], request: gr.Request) -> dict[Any, Any]:
        return self._start(data, request, queue_if_busy=False)

    def create_confirmed(self, data: dict[Any, Any], request: gr.Request) -> dict[Any, Any]:
        return self._start(data, request, queue_if_busy=True)

    def _start(self, data: dict[Any, Any], request: gr.Request, *, queue_if_busy: bool) -> dict[Any, Any]:
        studio, form, to_watch = self.studio, self.form, self.to_watch
        user = studio.user(request)
        lang = lang_of(request)
        key = data[self.key_state] or uuid.uuid4().hex
        hidden = gr.update(visible=False)
        try:
            ids, _ = self._files_and_facts(data, request, store=True)
        except StudioError as exc:
            return {form.notice: message("error", exc.text(lang)), form.confirm: hidden, to_watch: None}
        # Every value as the form shows it: presets already wrote theirs into the fields.
        result = submit(studio.backend, user.id, self.spec.name, self._raw_params(data, ids), idempotency_key=key,
                        expert=True, queue_if_busy=queue_if_busy, on_queued=studio.wake)
        if isinstance(result, Accepted):
            return {self.job_state: result.job.id, to_watch: result.job.id, self.key_state: uuid.uuid4().hex,
                    form.confirm: hidden, form.notice: "", self.cancel_btn: gr.update(visible=True)}
        if isinstance(result, NeedsConfirmation):
            return {form.confirm: gr.update(visible=True), to_watch: None, form.notice: "",
                    form.confirm_msg: message("warn", pick(result.message, lang), elem_id="busy-message")}
        return {form.notice: message("error", error_text(result.error, lang), elem_id="rejection"),
                form.confirm: hidden, to_watch: None}


class _FileUpload:
    """The upload handler of one file parameter: Gradio calls it without the parameter's name."""

    def __init__(self, events: _FormEvents, name: str) -> None:
        self._events, self._name = events, name

    def store(self, path: str | None, request: gr.Request) -> tuple[Any, ...]:
        return self._events.store(self._name, path, request)


def _wire_presets(form: Form) -> None:
    """Presets and the fields they set, kept in step in the browser (no round trip, so a
    Create click right after a choice already sends the chosen values):

    - choosing an option writes its values into the fields (a value the option does not
      set goes back to the default, as the backend applies a preset over the defaults);
    - changing such a field by hand so it no longer matches clears the preset's choice,
      so the Beginner view never claims "Square" for a 600x512 picture.
    """
    spec = form.spec
    for preset in spec.presets:
        radio = form.presets[preset.name]
        names = sorted({name for option in preset.options for name in option.values if name in form.fields})
        if not names:
            continue
        table = {option.name: {n: option.values.get(n, _default(spec, n)) for n in names} for option in preset.options}
        targets = [form.fields[n] for n in names]
        apply_js = (f"(choice, ...current) => {{ const v = {json.dumps(table)}[choice];"
                    f" return v ? {json.dumps(names)}.map(n => v[n]) : current; }}")
        radio.input(None, [radio, *targets], targets, js=apply_js, api_visibility="private", show_progress="hidden")
        for n, target in zip(names, targets):
            keep_js = (f"(value, choice) => {{ const v = {json.dumps(table)}[choice];"
                       f" return v && v[{json.dumps(n)}] !== value ? null : choice; }}")
            target.input(None, [target, radio], radio, js=keep_js, api_visibility="private", show_progress="hidden")


def _beginner_reproduces(spec: WorkflowSpec, params: dict[str, Any], files: Iterable[str]) -> bool:
    """Whether the beginner fields and presets alone give the job's parameters."""
    raw = {p.name: params[p.name] for p in spec.params if p.beginner and p.name in params}
    raw.update({p.name: params[p.name] for p in spec.presets if p.name in params})
    try:
        return validate_params(spec, raw, expert=False) == params
    except StudioError:
        return False
