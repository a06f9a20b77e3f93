"""HTML fragments the pages show: the progress card, price line, tables, messages.

Every value is escaped here. Results are shown by the element for their kind (an
``<img>``, an ``<audio>`` or a ``<video>`` player) pointing at the access-checked file
route (:mod:`studio.files`), never Gradio file paths.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from backend.jobs.state import ACTIVE, JobState

from .files import file_url
from .i18n import t



def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def message(kind: str, text: str, *, elem_id: str = "") -> str:
    """A coloured message box; ``kind`` is ok, info, warn or error."""
    if not text:
        return ""
    ident = f' id="{esc(elem_id)}"' if elem_id else ""
    return f'<div class="msg {esc(kind)}"{ident}>{esc(text)}</div>'


def pill(state: str, label: str) -> str:
    return f'<span class="pill {esc(state)}">{esc(label)}</span>'


def when(moment: dt.datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment else ""


def who(name: str, balance: int, *, role: str, lang: str) -> str:
    badge = f'<span class="role">{esc(t("nav.admin", lang))}</span>' if role == "admin" else ""
    return (f'<div class="who"><span id="who-name">{esc(name)}</span>{badge}'
            f'<span class="balance" id="balance">{balance} {esc(t("credits", lang))}</span></div>')


def price_line(lang: str, *, cost: int | None = None, seconds: float | None = None, warn: str = "", error: str = "",
               hint: str = "") -> str:
    parts = []
    if cost is not None:
        parts.append(f'<span class="price" id="price">{esc(t("create.price", lang))}: {cost} {esc(t("credits", lang))}</span>')
    if seconds is not None:
        parts.append(f'<span class="est">≈ {max(1, round(seconds))} s</span>')
    if hint:
        parts.append(f'<span class="est">{esc(hint)}</span>')
    line = f'<div class="price-line">{"".join(parts)}</div>' if parts else ""
    return line + message("warn", warn, elem_id="guard") + message("error", error, elem_id="form-error")


@dataclass
class ProgressView:
    """Everything the progress card shows about one job."""

    job_id: str
    workflow: str
    state: str
    cost: int = 0
    stage: str = ""
    value: float = 0
    max: float = 0
    fraction: float = 0.0
    eta_seconds: float | None = None
    #: A queued job: jobs that get a node first, and the expected wait.
    ahead: int | None = None
    wait_seconds: float | None = None
    preview: str | None = None
    #: (asset id, kind) of each result.
    outputs: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""
    refunded: int = 0


def _bar(fraction: float) -> tuple[str, int]:
    pct = max(0, min(100, round(fraction * 100)))
    return f'<div class="bar"><div style="width:{pct}%"></div></div>', pct


def media(asset: str, kind: str, *, alt: str = "") -> str:
    """One result in the element that shows or plays its kind."""
    url = file_url(asset)
    if kind == "audio":
        return f'<audio controls preload="metadata" src="{url}"></audio>'
    if kind == "video":
        return f'<video controls muted playsinline loop preload="metadata" src="{url}"></video>'
    if kind == "image":
        return f'<img src="{url}" alt="{esc(alt)}">'
    return f'<a href="{file_url(asset, download=True)}">{esc(alt or kind)}</a>'


def _shots(outputs: Sequence[tuple[str, str]], lang: str, preview: str | None) -> str:
    tiles = []
    for i, (asset, kind) in enumerate(outputs, 1):
        shown = media(asset, kind, alt=f"result {i}")
        if kind == "image":  # a picture opens full size; players keep their own controls
            shown = f'<a href="{file_url(asset)}" target="_blank" rel="noopener">{shown}</a>'
        tiles.append(
            f'<div class="shot output {esc(kind)}">{shown}<div class="cap"><span>#{i}</span>'
            f'<a href="{file_url(asset, download=True)}" class="download">{esc(t("progress.download", lang))}</a></div></div>'
        )
    if preview and not outputs:
        tiles.append(f'<div class="shot preview"><img src="{file_url(preview)}" alt="preview">'
                     f'<div class="cap"><span>{esc(t("progress.preview", lang))}</span></div></div>')
    return f'<div class="shots" id="shots">{"".join(tiles)}</div>' if tiles else ""


def _timing(view: ProgressView, lang: str) -> list[str]:
    """The card's time figures: a queued job's place and wait, a running job's steps and
    time left (never a step ETA for a job that has not started)."""
    if view.state == JobState.QUEUED and view.ahead is not None:
        parts = [t("progress.ahead", lang, count=view.ahead)]
        if view.wait_seconds is not None:
            parts.append(t("progress.wait", lang, seconds=max(1, round(view.wait_seconds))))
        return parts
    parts = []
    if view.state == JobState.RUNNING and view.max:
        parts.append(t("progress.steps", lang, value=int(view.value), max=int(view.max)))
    if view.state in ACTIVE and view.eta_seconds is not None:
        seconds = round(view.eta_seconds)
        parts.append(t("progress.eta", lang, seconds=seconds) if seconds >= 1 else t("progress.finishing", lang))
    return parts


def progress_card(view: ProgressView, lang: str) -> str:
    state_label = t(f"state.{view.state}", lang)
    headline = view.stage if view.state == JobState.RUNNING and view.stage else state_label
    bar, pct = _bar(view.fraction)
    meta = [pill(view.state, state_label), esc(t("progress.cost", lang, amount=view.cost))]
    meta += [esc(part) for part in _timing(view, lang)]
    body = ""
    if view.state == JobState.FAILED:
        body += message("error", view.reason, elem_id="failure")
    if view.refunded:
        body += message("info", t("progress.refunded", lang, amount=view.refunded), elem_id="refund")
    return (
        f'<div class="progress-card" id="progress-card" data-state="{esc(view.state)}" data-job="{esc(view.job_id)}"'
        f' data-fraction="{view.fraction:.4f}">'
        f'<div class="head"><span class="stage" id="stage">{esc(headline)}</span>'
        f'<span class="meta" id="progress-meta">{" · ".join(meta)} · {pct}%</span></div>'
        f"{bar}{body}{_shots(view.outputs, lang, view.preview)}</div>"
    )


def idle_card(lang: str) -> str:
    return f'<div class="empty" id="progress-idle">{esc(t("create.idle", lang))}</div>'


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, elem_id: str = "") -> str:
    """A table of already-escaped cells."""
    ident = f' id="{esc(elem_id)}"' if elem_id else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="studio"{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def thumbs(outputs: Iterable[tuple[str, str]]) -> str:
    """Small results for a table row: pictures and videos as thumbnails, songs as players."""
    tiles = "".join(f'<span class="thumb {esc(kind)}">{media(asset, kind)}</span>' for asset, kind in outputs)
    return f'<div class="thumbs">{tiles}</div>'


def signout_form(label: str, *, everywhere: bool = False, elem_id: str = "signout") -> str:
    """A sign-out button: a form posting to ``/logout`` (never a link: see :mod:`studio.pages.signin`)."""
    field = '<input type="hidden" name="everywhere" value="1">' if everywhere else ""
    return (f'<form method="post" action="/logout" class="signout-form">{field}'
            f'<button type="submit" id="{elem_id}" class="nav-link small">{html.escape(label)}</button></form>')
