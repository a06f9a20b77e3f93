"""The Admin page's Dead letters tab: agent events the studio set aside, and their replay.

An event lands here when applying it failed for its own reasons (it names an output file
the asset store does not have, a size that does not match, or it kept crashing the
consumer), never because a service was away (``backend.jobs.lifecycle``). The administrator
sees why, fixes the cause, and replays it (or discards it); the same actions exist on the
command line (``python -m backend events``). Every handler checks the role on the server.
"""

from __future__ import annotations

import datetime as dt
import re

import gradio as gr

from backend.errors import InvalidParameter, StudioError

from ..context import Studio
from ..i18n import lang_of, t
from ..render import esc, message, table

#: Dead letters listed at most (the oldest first); the CLI lists any number.
SHOWN = 200


def build(studio: Studio, demo: gr.Blocks) -> None:
    """The tab's contents; call inside the tab's ``with`` block."""
    i18n = studio.i18n
    listing = gr.HTML("", elem_id="dead-letters", js_on_load=None)
    with gr.Row(equal_height=True):
        ids = gr.Textbox(label=i18n("dead.ids"), elem_id="dead-letter-ids", scale=3)
        replay = gr.Button(i18n("dead.replay"), variant="primary", elem_id="dead-letter-replay")
        replay_all = gr.Button(i18n("dead.replay_all"), elem_id="dead-letter-replay-all")
        discard = gr.Button(i18n("dead.discard"), variant="stop", elem_id="dead-letter-discard")
    note = gr.HTML("", elem_id="dead-letter-msg", js_on_load=None)
    bus = studio.backend.bus

    def show(request: gr.Request) -> str:
        if not studio.user(request).is_admin:
            return gr.skip()  # the page already says it is for administrators
        return dead_letters_table(studio, lang_of(request))

    def act(kind: str, chosen: str, request: gr.Request) -> tuple[str, str]:
        studio.admin(request)
        lang = lang_of(request)
        wanted = [i for i in re.split(r"[\s,]+", chosen or "") if i]
        try:
            if kind == "replay_all":
                done = bus.replay_dead_letters()
            elif not wanted:
                raise InvalidParameter("Enter the ids of the dead letters (from the table).", zh="请输入死信编号（见上表）。")
            elif kind == "replay":
                done = bus.replay_dead_letters(wanted)
            else:
                done = bus.discard_dead_letters(wanted)
        except StudioError as exc:
            return message("error", exc.text(lang)), gr.skip()
        missing = sorted(set(wanted) - set(done)) if kind != "replay_all" else []
        text = t(f"dead.{'discarded' if kind == 'discard' else 'replayed'}", lang, count=len(done))
        if missing:
            text += " " + t("dead.not_found", lang, ids=", ".join(missing))
        return message("warn" if missing else "ok", text), dead_letters_table(studio, lang)

    def do_replay(chosen: str, request: gr.Request) -> tuple[str, str]:
        return act("replay", chosen, request)

    def do_replay_all(chosen: str, request: gr.Request) -> tuple[str, str]:
        return act("replay_all", chosen, request)

    def do_discard(chosen: str, request: gr.Request) -> tuple[str, str]:
        return act("discard", chosen, request)

    demo.load(show, None, listing, api_visibility="private")
    replay.click(do_replay, [ids], [note, listing], api_name="admin_replay_dead_letters")
    replay_all.click(do_replay_all, [ids], [note, listing], api_name="admin_replay_all_dead_letters")
    discard.click(do_discard, [ids], [note, listing], api_name="admin_discard_dead_letters")


def dead_letters_table(studio: Studio, lang: str) -> str:
    try:
        letters = studio.backend.bus.dead_letters(limit=SHOWN)
    except StudioError as exc:  # the broker is away: say so instead of an empty table
        return message("error", exc.text(lang), elem_id="dead-letters-error")
    if not letters:
        return message("ok", t("dead.none", lang), elem_id="no-dead-letters")
    rows = []
    for letter in letters:
        body = letter.body
        failed = dt.datetime.fromtimestamp(letter.failed_at).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([f"<code>{esc(letter.id)}</code>", esc(failed), esc(letter.queue),
                     f"<code>{esc(str(body.get('job_id') or '')[:8])}</code> {esc(body.get('type') or '')}",
                     esc(body.get("node_id") or "–"), f'<span class="err">{esc(letter.reason[:300])}</span>'])
    headers = [t(f"dead.{k}", lang) for k in ("id", "when", "queue", "event", "node", "reason")]
    return table(headers, rows, elem_id="dead-letters-table")
