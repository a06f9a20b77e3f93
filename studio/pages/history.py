"""The History page: the user's jobs with status, cost, refunds and results; download
and "draw again" (which opens the Create page refilled with the job's parameters)."""

from __future__ import annotations

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

LIMIT = 100


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    header(studio, demo, "history")
    with gr.Row():
        gr.Markdown(i18n("history.title"), elem_classes=["page-title"])
        refresh = gr.Button(i18n("history.refresh"), size="sm", scale=0, min_width=90, elem_id="history-refresh")
    listing = gr.HTML("", elem_id="history", js_on_load=None)

    def render(request: gr.Request) -> str:
        user = studio.user(request)
        return history_html(studio, user.id, lang_of(request))

    demo.load(render, None, listing, api_visibility="private")
    refresh.click(render, None, listing, api_name="history", show_progress="hidden")


def history_html(studio: Studio, user_id: int, lang: str) -> str:
    """The user's newest jobs as a table (also used by tests)."""
    db, library = studio.backend.db, studio.backend.library
    rows = jobs.list_for_user(db, user_id, limit=LIMIT)
    if not rows:
        return message("info", t("history.empty", lang), elem_id="history-empty")
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
    return table(headers, cells, elem_id="history-table")
