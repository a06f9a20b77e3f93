"""The History page: the user's jobs with status, cost, refunds and results; download
and "draw again" (which opens the Create page refilled with the job's parameters).

Pages of ``PAGE_SIZE`` jobs, newest first; "Older" moves a cursor (the creation time of
the page's last job) so paging stays cheap however long the history is."""

from __future__ import annotations

import datetime as dt
from typing import Any

import gradio as gr
from sqlalchemy import select

from backend import jobs
from backend.db.models import JobOutput, LedgerEntry
from backend.errors import NotFound
from backend.messages import failure_reason

from ..context import Studio
from ..i18n import lang_of, pick, t
from ..layout import header
from ..render import esc, message, pill, table, thumbs, when

PAGE_SIZE = 20


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    header(studio, demo, "history")
    with gr.Row():
        gr.Markdown(i18n("history.title"), elem_classes=["page-title"])
        refresh = gr.Button(i18n("history.refresh"), size="sm", scale=0, min_width=90, elem_id="history-refresh")
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
    demo.load(first, None, outputs, api_visibility="private")
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
    db, library = studio.backend.db, studio.backend.library
    rows = jobs.list_for_user(db, user_id, limit=size + 1, before=before)
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = rows[-1].created_at.isoformat() if more and rows else None
    if not rows:
        return message("info", t("history.empty", lang), elem_id="history-empty"), None
    ids = [job.id for job in rows]
    with db.read() as s:
        outputs: dict[str, list[str]] = {}
        for job_id, asset_id in s.execute(
            select(JobOutput.job_id, JobOutput.asset_id).where(JobOutput.job_id.in_(ids)).order_by(JobOutput.id)
        ):
            outputs.setdefault(job_id, []).append(asset_id)
        refunds = dict(s.execute(
            select(LedgerEntry.job_id, LedgerEntry.amount).where(LedgerEntry.job_id.in_(ids), LedgerEntry.kind == "refund")
        ).all())
    cells = []
    for job in rows:
        try:
            title = library.get(job.workflow).title.get(lang)
        except NotFound:
            title = job.workflow
        status = pill(job.state, t(f"state.{job.state}", lang))
        if job.state == "failed":
            reason = pick(failure_reason(job.error_stage, job.error_type or "Error", job.error_message or ""), lang)
            status += f'<div class="err">{esc(reason)}</div>'
        refund = refunds.get(job.id)
        again = ""
        if job.workflow in library:
            again = f'<a class="again" href="/studio/?again={esc(job.id)}" id="again-{esc(job.id)}">↻ {esc(t("history.again", lang))}</a>'
        cells.append([
            esc(when(job.created_at)), esc(title), status, esc(job.cost), esc(f"+{refund}" if refund else ""),
            thumbs(outputs.get(job.id, [])), again,
        ])
    headers = [t(k, lang) for k in ("history.when", "history.workflow", "history.status", "history.cost",
                                    "history.refund", "history.outputs")] + [""]
    return table(headers, cells, elem_id="history-table"), next_cursor
