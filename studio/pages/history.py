"""The History page: the user's jobs with their prompt, status, cost, refunds and results;
download and "draw again" (which opens the Create page refilled with the job's
parameters).

Pages of ``PAGE_SIZE`` jobs, newest first; "Older" moves a cursor (the creation time of
the page's last job) so paging stays cheap however long the history is. Each job opens
a job view (``?job=<id>``): prompt, every parameter, the results at full size to view,
play and download, and "draw again"."""

from __future__ import annotations

import datetime as dt
from typing import Any

import gradio as gr
from backend.errors import NotFound
from backend.jobs import queries
from backend.jobs.messages import failure_reason
from backend.jobs.store import JobRecord
from backend.workflows import Library
from backend.jobs.state import JobState

from ..context import Studio
from ..i18n import lang_of, pick, t
from ..layout import header
from ..files import file_url
from ..render import esc, media, message, pill, table, thumbs, when

PAGE_SIZE = 20


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    header(studio, demo, "history")
    with gr.Row():
        gr.Markdown(i18n("history.title"), elem_classes=["page-title"])
        refresh = gr.Button(i18n("history.refresh"), size="sm", scale=0, min_width=90, elem_id="history-refresh")
    detail = gr.HTML("", elem_id="job-view", js_on_load=None)
    listing = gr.HTML("", elem_id="history", js_on_load=None)
    # The cursors of the pages before this one (ISO times; "" for the newest page).
    cursors = gr.State([])
    with gr.Row():
        newer = gr.Button(i18n("history.newer"), size="sm", visible=False, elem_id="history-newer")
        older = gr.Button(i18n("history.older"), size="sm", visible=False, elem_id="history-older")

    def show(stack: list[str], request: gr.Request) -> tuple[str, list[str], Any, Any]:
        user = studio.user(request)
        before = dt.datetime.fromisoformat(stack[-1]) if stack and stack[-1] else None
        html, next_cursor = history_page(studio, user.id, lang_of(request), before=before)
        return (html, stack, gr.update(visible=len(stack) > 1),
                gr.update(visible=next_cursor is not None))

    def first(request: gr.Request) -> tuple[str, list[str], Any, Any]:
        return show([""], request)

    def go_older(stack: list[str], request: gr.Request) -> tuple[str, list[str], Any, Any]:
        user = studio.user(request)
        before = dt.datetime.fromisoformat(stack[-1]) if stack and stack[-1] else None
        _, next_cursor = history_page(studio, user.id, lang_of(request), before=before)
        return show([*(stack or [""]), next_cursor] if next_cursor else (stack or [""]), request)

    def go_newer(stack: list[str], request: gr.Request) -> tuple[str, list[str], Any, Any]:
        return show(stack[:-1] if len(stack) > 1 else [""], request)

    outputs = [listing, cursors, newer, older]
    demo.load(first, None, outputs, api_visibility="private", show_progress="hidden")

    def open_job(request: gr.Request) -> str:
        user = studio.user(request)
        job_id = request.query_params.get("job") if request.query_params else None
        return job_view(studio, user.id, str(job_id), lang_of(request)) if job_id else ""

    demo.load(open_job, None, detail, api_visibility="private", show_progress="hidden")
    refresh.click(first, None, outputs, api_visibility="private", show_progress="hidden")
    older.click(go_older, [cursors], outputs, api_visibility="private", show_progress="hidden")
    newer.click(go_newer, [cursors], outputs, api_visibility="private", show_progress="hidden")


def history_html(studio: Studio, user_id: int, lang: str) -> str:
    """The user's newest page of jobs as a table."""
    return history_page(studio, user_id, lang)[0]


def history_page(studio: Studio, user_id: int, lang: str, *, before: dt.datetime | None = None,
                 size: int = PAGE_SIZE) -> tuple[str, str | None]:
    """(table of the user's jobs created before ``before``, the cursor of the next older
    page or None when there is none)."""
    library = studio.backend.library
    page = queries.history_page(studio.backend.db, user_id, before=before, size=size)
    next_cursor = page.next_cursor.isoformat() if page.next_cursor is not None else None
    if not page.rows:
        return message("info", t("history.empty", lang), elem_id="history-empty"), None
    cells = []
    for row in page.rows:
        job = row.job
        try:
            title = library.get(job.workflow).title.get(lang)
        except NotFound:
            title = job.workflow
        status = pill(job.state, t(f"state.{job.state}", lang))
        if job.state == JobState.FAILED:
            reason = pick(failure_reason(job.error_stage, job.error_type or "Error", job.error_message or ""), lang)
            status += f'<div class="err">{esc(reason)}</div>'
        refund = row.refund
        opened = (f'<a class="open-job" href="/studio/history?job={esc(job.id)}" id="open-{esc(job.id)}">'
                  f'{esc(prompt_of(library, job) or t("history.open", lang))}</a>')
        cells.append([
            esc(when(job.created_at)), f"{esc(title)}<div class='prompt'>{opened}</div>", status, esc(job.cost),
            esc(f"+{refund}" if refund else ""), thumbs([(o.asset_id, o.kind) for o in row.outputs]), again_link(library, job, lang),
        ])
    headers = [t(k, lang) for k in ("history.when", "history.job", "history.status", "history.cost",
                                    "history.refund", "history.outputs")] + [""]
    return table(headers, cells, elem_id="history-table"), next_cursor


#: Longest prompt shown in a table row (the job view shows all of it).
PROMPT_CHARS = 90


def prompt_of(library: Library, job: JobRecord, *, limit: int | None = PROMPT_CHARS) -> str:
    """The job's main text: the first text parameter of its workflow that was filled in."""
    if job.workflow not in library:
        return ""
    spec = library.get(job.workflow)
    for param in spec.params:
        value = job.params.get(param.name)
        if param.type in ("text", "string") and isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
    return ""


def again_link(library: Library, job: JobRecord, lang: str) -> str:
    if job.workflow not in library:
        return ""
    return (f'<a class="again" href="/studio/?again={esc(job.id)}" id="again-{esc(job.id)}">'
            f'↻ {esc(t("history.again", lang))}</a>')


def job_view(studio: Studio, user_id: int, job_id: str, lang: str) -> str:
    """One job in full: prompt, parameters, results at full size, download, draw again."""
    library = studio.backend.library
    try:
        detail = queries.job_detail(studio.backend.db, job_id, user_id=user_id)
    except NotFound as exc:
        return message("error", exc.text(lang), elem_id="job-missing")
    job, outputs = detail.job, detail.outputs
    spec = library.get(job.workflow) if job.workflow in library else None
    rows = []
    for name, value in job.params.items():
        param = spec.param(name) if spec is not None else None
        preset = spec.preset(name) if spec is not None and param is None else None
        if param is not None and param.type in ("image", "mask"):
            continue
        if preset is not None:
            option = preset.option(str(value))
            label, shown = preset.label.get(lang), option.label.get(lang) if option is not None else value
        else:
            label, shown = (param.label.get(lang) if param is not None else name), value
        rows.append(f"<tr><th>{esc(label)}</th><td>{esc(shown)}</td></tr>")
    title = spec.title.get(lang) if spec is not None else job.workflow
    results = "".join(
        f'<figure class="result {esc(kind)}">{media(asset, kind, alt=title)}'
        f'<figcaption><a href="{file_url(asset, download=True)}" class="download">{esc(t("progress.download", lang))}'
        f"</a></figcaption></figure>" for asset, kind in outputs)
    status = pill(job.state, t(f"state.{job.state}", lang))
    prompt = prompt_of(library, job, limit=None)
    return (f'<section class="job-view" id="job-{esc(job.id)}"><div class="job-head"><h3>{esc(title)}</h3>{status}'
            f'<span class="when">{esc(when(job.created_at))} · {esc(t("progress.cost", lang, amount=job.cost))}</span>'
            f'{again_link(library, job, lang)}<a href="/studio/history" class="close">✕</a></div>'
            + (f'<blockquote class="job-prompt" id="job-prompt">{esc(prompt)}</blockquote>' if prompt else "")
            + f'<div class="results" id="job-results">{results}</div>'
            f'<table class="studio params" id="job-params"><tbody>{"".join(rows)}</tbody></table></section>')
