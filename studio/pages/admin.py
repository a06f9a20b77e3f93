"""The Admin page: live nodes, users, redeem code batches, all jobs, workflows with
their stage aliases, per-user limits (``admin_limits.py``), dead letters
(``dead_letters.py``), and the sign-up settings.

Every handler checks the role on the server (:meth:`Studio.admin`); hiding the page
from creators is only a courtesy.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

import gradio as gr
from backend import accounts
from backend.accounts import app_settings, codes
from backend.assets import maintenance
from backend.assets.blobs import human_size
from backend.errors import InvalidParameter, StudioError
from backend.jobs import queries, stages
from backend.jobs.messages import user_event

from ..context import Studio, fail
from . import admin_limits, dead_letters
from ..i18n import lang_of, t
from ..layout import header
from ..render import esc, message, pill, table, when

log = logging.getLogger(__name__)

NODE_REFRESH_SECONDS = 3.0
JOB_ROWS = 200


def build(studio: Studio, demo: gr.Blocks) -> None:
    i18n = studio.i18n
    header(studio, demo, "admin")
    denied = gr.HTML("", js_on_load=None, elem_id="admin-denied")
    with gr.Column(visible=False, elem_id="admin-panel") as panel:
        gr.Markdown(i18n("admin.title"))
        with gr.Tabs():
            with gr.Tab(i18n("admin.nodes"), id="nodes"):
                nodes_html = gr.HTML("", elem_id="nodes", js_on_load=None)
            with gr.Tab(i18n("admin.users"), id="users"):
                users_html = gr.HTML("", elem_id="users", js_on_load=None)
                with gr.Row(equal_height=True):
                    who = gr.Textbox(label=i18n("admin.user_name"), elem_id="admin-user")
                    credits = gr.Number(label=i18n("admin.credits"), value=100, precision=0, elem_id="admin-credits")
                    note = gr.Textbox(label=i18n("admin.note"), elem_id="admin-note")
                with gr.Row():
                    grant = gr.Button(i18n("admin.grant"), variant="primary", elem_id="admin-grant")
                    disable = gr.Button(i18n("admin.disable"), variant="stop", elem_id="admin-disable")
                    enable = gr.Button(i18n("admin.enable"), elem_id="admin-enable")
                with gr.Row(equal_height=True):
                    new_name = gr.Textbox(label=i18n("admin.user_name"), elem_id="new-user")
                    new_password = gr.Textbox(label=i18n("admin.password"), type="password", elem_id="new-password")
                    new_role = gr.Radio(["creator", "admin"], value="creator", label=i18n("admin.role"))
                    create = gr.Button(i18n("admin.create_user"), elem_id="admin-create-user")
                users_msg = gr.HTML("", elem_id="users-msg", js_on_load=None)
            with gr.Tab(i18n("admin.codes"), id="codes"):
                with gr.Row(equal_height=True):
                    count = gr.Number(label=i18n("admin.count"), value=10, precision=0, minimum=1, maximum=codes.MAX_BATCH)
                    worth = gr.Number(label=i18n("admin.credits"), value=100, precision=0, minimum=1)
                    days = gr.Number(label=i18n("admin.expires"), value=0, precision=0, minimum=0)
                    make = gr.Button(i18n("admin.make_codes"), variant="primary", elem_id="make-codes")
                new_codes = gr.Textbox(label=i18n("admin.new_codes"), lines=4, interactive=False, elem_id="new-codes")
                batches_html = gr.HTML("", elem_id="batches", js_on_load=None)
            with gr.Tab(i18n("admin.jobs"), id="jobs"):
                failed_only = gr.Checkbox(label=i18n("admin.failed_only"), value=False)
                jobs_html = gr.HTML("", elem_id="all-jobs", js_on_load=None)
            with gr.Tab(i18n("admin.workflows"), id="workflows"):
                workflows_html = gr.HTML("", elem_id="workflows", js_on_load=None)
                names = studio.backend.library.names()
                with gr.Row(equal_height=True):
                    wf = gr.Dropdown(names, value=names[0] if names else None, label=i18n("admin.workflow"))
                    node = gr.Dropdown([], label=i18n("admin.node"))
                    alias_en = gr.Textbox(label=i18n("admin.alias_en"))
                    alias_zh = gr.Textbox(label=i18n("admin.alias_zh"))
                save_alias = gr.Button(i18n("admin.save_alias"), elem_id="save-alias")
                alias_msg = gr.HTML("", js_on_load=None)
            with gr.Tab(i18n("admin.limits"), id="limits"):
                admin_limits.build(studio, demo)
            with gr.Tab(i18n("admin.dead_letters"), id="dead-letters"):
                dead_letters.build(studio, demo)
            with gr.Tab(i18n("admin.signup"), id="signup"):
                mode = gr.Radio([("open", "open"), ("invite", "invite"), ("off", "off")], label=i18n("admin.signup_mode"),
                                elem_id="signup-mode")
                welcome = gr.Number(label=i18n("admin.welcome"), precision=0, minimum=0, elem_id="welcome-credits")
                save_signup = gr.Button(i18n("admin.save"), elem_id="save-signup")
                signup_msg = gr.HTML("", js_on_load=None)
        refresh = gr.Button(i18n("admin.refresh"), size="sm", elem_id="admin-refresh")

    db, backend = studio.backend.db, studio.backend

    def everything(request: gr.Request) -> dict[Any, Any]:
        user = studio.user(request)
        lang = lang_of(request)
        if not user.is_admin:
            return {denied: message("error", t("admin.denied", lang)), panel: gr.update(visible=False)}
        choices = [(t(f"signup.{m}", lang), m) for m in ("open", "invite", "off")]
        return {
            denied: "", panel: gr.update(visible=True), nodes_html: nodes_table(studio, lang),
            users_html: users_table(studio, lang), batches_html: batches_table(studio, lang),
            jobs_html: jobs_table(studio, lang, failed_only=False), workflows_html: workflows_table(studio, lang),
            mode: gr.update(choices=choices, value=app_settings.signup_mode(db, backend.settings)),
            welcome: app_settings.welcome_credits(db, backend.settings),
        }

    load_outputs = [denied, panel, nodes_html, users_html, batches_html, jobs_html, workflows_html, mode, welcome]
    demo.load(everything, None, load_outputs, api_visibility="private", show_progress="hidden")
    refresh.click(everything, None, load_outputs, api_visibility="private")

    def tick(request: gr.Request) -> str:
        user = studio.user(request)
        if not user.is_admin:
            return gr.skip()
        return nodes_table(studio, lang_of(request))

    gr.Timer(NODE_REFRESH_SECONDS).tick(tick, None, nodes_html, api_visibility="private", show_progress="hidden")

    def act(kind: str, name: str, amount: float | None, text: str, request: gr.Request) -> tuple[str, str]:
        admin = studio.admin(request)
        lang = lang_of(request)
        try:
            if kind == "grant":
                credits_given = int(amount or 0)
                target_id = accounts.grant(db, name, credits_given, note=text or None, actor=admin.name).id
                # Their pages (header balance, a toast) learn of it from the notice.
                notice = {"en": f"{admin.name} gave you {credits_given} credits.",
                          "zh": f"{admin.name} 为您增加了 {credits_given} 积分。"}
                try:
                    backend.bus.publish_user_event(target_id, user_event("notice", None, text=notice))
                except StudioError as exc:
                    log.warning("grant notice to user %s not sent: %s", target_id, exc)
            else:
                target = accounts.set_disabled(db, name, kind == "disable")
                if kind == "disable":
                    studio.sessions.revoke_user(target.id)
        except StudioError as exc:
            return message("error", exc.text(lang)), gr.skip()
        return message("ok", t("admin.done", lang)), users_table(studio, lang)

    def do_grant(name: str, amount: float | None, text: str, request: gr.Request) -> tuple[str, str]:
        return act("grant", name, amount, text, request)

    def do_disable(name: str, amount: float | None, text: str, request: gr.Request) -> tuple[str, str]:
        return act("disable", name, amount, text, request)

    def do_enable(name: str, amount: float | None, text: str, request: gr.Request) -> tuple[str, str]:
        return act("enable", name, amount, text, request)

    grant.click(do_grant, [who, credits, note], [users_msg, users_html], api_name="admin_grant")
    disable.click(do_disable, [who, credits, note], [users_msg, users_html], api_name="admin_disable")
    enable.click(do_enable, [who, credits, note], [users_msg, users_html], api_name="admin_enable")

    def create_user(name: str, password: str, role: str, request: gr.Request) -> tuple[str, str]:
        studio.admin(request)
        lang = lang_of(request)
        try:
            accounts.create_user(db, name, password, role=role,
                                 welcome_credits=app_settings.welcome_credits(db, backend.settings), hasher=studio.hasher)
        except StudioError as exc:
            return message("error", exc.text(lang)), gr.skip()
        return message("ok", t("admin.done", lang)), users_table(studio, lang)

    create.click(create_user, [new_name, new_password, new_role], [users_msg, users_html], api_name="admin_create_user")

    def make_codes(n: float | None, value: float | None, expires: float | None, request: gr.Request) -> tuple[str, str]:
        admin = studio.admin(request)
        try:
            batch = codes.create_batch(db, int(n or 0), int(value or 0), expires_days=float(expires) if expires else None,
                                       created_by=admin.id)
        except StudioError as exc:
            raise fail(exc, request) from None
        return "\n".join(batch.codes), batches_table(studio, lang_of(request))

    make.click(make_codes, [count, worth, days], [new_codes, batches_html], api_name="admin_codes")

    def list_jobs(only_failed: bool, request: gr.Request) -> str:
        studio.admin(request)
        return jobs_table(studio, lang_of(request), failed_only=only_failed)

    failed_only.change(list_jobs, [failed_only], [jobs_html], api_visibility="private")

    def nodes_of(name: str | None, request: gr.Request) -> dict:
        studio.admin(request)
        if not name or name not in backend.library:
            return gr.update(choices=[], value=None)
        spec = backend.library.get(name)
        return gr.update(choices=sorted(spec.graph, key=lambda n: (len(n), n)), value=None)

    def alias_of(name: str | None, graph_node_id: str | None, request: gr.Request) -> tuple[str, str]:
        studio.admin(request)
        if not name or not graph_node_id or name not in backend.library:
            return "", ""
        current = stages.aliases(db, backend.library.get(name)).get(graph_node_id)
        return (current["en"], current["zh"]) if current else ("", "")

    def save(name: str | None, graph_node_id: str | None, en: str, zh: str, request: gr.Request) -> tuple[str, str]:
        studio.admin(request)
        lang = lang_of(request)
        try:
            if not name or not graph_node_id:
                raise InvalidParameter("Choose a workflow and a node.", zh="请选择工作流和节点。")
            stages.set_alias(db, backend.library.get(name), graph_node_id, en=en, zh=zh)
        except StudioError as exc:
            return message("error", exc.text(lang)), gr.skip()
        return message("ok", t("admin.saved", lang)), workflows_table(studio, lang)

    wf.change(nodes_of, [wf], [node], api_visibility="private")
    def nodes_on_load(name: str | None, request: gr.Request) -> dict:
        if not studio.user(request).is_admin:
            return gr.skip()  # the page already says it is for administrators
        return nodes_of(name, request)

    demo.load(nodes_on_load, [wf], [node], api_visibility="private")
    node.change(alias_of, [wf, node], [alias_en, alias_zh], api_visibility="private")
    save_alias.click(save, [wf, node, alias_en, alias_zh], [alias_msg, workflows_html], api_name="admin_alias")

    def set_signup(value: str, grant_amount: float | None, request: gr.Request) -> str:
        studio.admin(request)
        lang = lang_of(request)
        try:
            app_settings.set_signup(db, mode=value, welcome=int(grant_amount or 0))
        except StudioError as exc:
            return message("error", exc.text(lang))
        return message("ok", t("admin.saved", lang))

    save_signup.click(set_signup, [mode, welcome], [signup_msg], api_name="admin_signup")


def nodes_table(studio: Studio, lang: str) -> str:
    views = studio.backend.registry.nodes()
    if not views:
        return message("warn", t("node.none", lang), elem_id="no-nodes")
    rows = []
    for view in views:
        s = view.state
        caps = studio.backend.registry.capabilities(s.node_id)
        kind = pill("simulated", t("node.simulated", lang)) if s.simulated else esc(t("node.real", lang))
        online = pill("online" if s.online else "offline", t("node.online" if s.online else "node.offline", lang))
        vram = f"{s.vram_free_mb / 1024:.1f} / {s.vram_total_mb / 1024:.1f} GB" if s.vram_total_mb else "–"
        models = ", ".join(sorted(m.rsplit("/", 1)[-1] for m in caps.models)) if caps else ""
        capability = f"{esc(t('node.types', lang, count=len(caps.classes)))}; {esc(models) or '–'}" if caps else "–"
        rows.append([f"<b>{esc(s.label or s.node_id)}</b><br><small>{esc(s.node_id)}</small>", online, kind,
                     f"{len(view.reservations)} / {s.slots}", esc(s.queue_remaining), vram, esc(speed_text(s.speed, lang)),
                     esc(s.loaded_checkpoint or "–"), capability])
    headers = [t(f"col.{k}", lang) for k in ("node", "state", "kind", "slots", "node_queue", "vram", "speed",
                                              "checkpoint", "capabilities")]
    return table(headers, rows, elem_id="nodes-table")


def speed_text(speed: float, lang: str) -> str:
    """The node's measured pace against the workflows' estimates, said plainly:
    ``speed`` is measured seconds per estimated second (0.5: twice as fast as estimated)."""
    if speed <= 0:
        return "–"
    return t("node.speed", lang, ratio=f"{speed:.2f}", times=f"{1 / speed:.1f}")


def users_table(studio: Studio, lang: str) -> str:
    stored = {u.user_id: u for u in maintenance.usage(studio.backend.db)}

    def storage(user_id: int) -> str:
        usage = stored.get(user_id)
        return esc(t("admin.storage_of", lang, size=human_size(usage.bytes), files=usage.assets)) if usage else "–"

    rows = [[esc(u.id), f"<b>{esc(u.name)}</b>", esc(u.role), esc(u.balance),
             pill("failed", t("user.disabled", lang)) if u.disabled else pill("succeeded", t("user.active", lang)),
             storage(u.id), esc(when(u.created_at)), esc(when(u.last_login_at))]
            for u in accounts.list_users(studio.backend.db)]
    return table([t("col.id", lang), t("admin.user_name", lang), t("admin.role", lang), t("account.balance", lang),
                  t("col.account", lang), t("col.storage", lang), t("col.created", lang), t("col.last_login", lang)],
                 rows, elem_id="users-table")


def batches_table(studio: Studio, lang: str) -> str:
    rows = [[esc(b["batch"]), esc(b["credits"]), esc(b["codes"]), esc(b["redeemed"]), esc(when(cast("dt.datetime | None", b["expires_at"])))]
            for b in codes.list_batches(studio.backend.db)]
    headers = [t("col.batch", lang), t("admin.credits", lang)] + [t(f"col.{k}", lang) for k in ("codes", "redeemed", "expires")]
    return table(headers, rows, elem_id="batches-table")


def jobs_table(studio: Studio, lang: str, *, failed_only: bool) -> str:
    found = [(row.job, row.user_name) for row in queries.admin_jobs(studio.backend.db, failed_only=failed_only,
                                                                      limit=JOB_ROWS)]
    rows = [[esc(when(job.created_at)), f"<code>{esc(job.id[:8])}</code>", esc(name), esc(job.workflow),
             pill(job.state, t(f"state.{job.state}", lang)), esc(job.cost), esc(job.node_id or "–"),
             f'<span class="err">{esc(job.error_type or "")} {esc((job.error_message or "")[:160])}</span>']
            for job, name in found]
    headers = [t("history.when", lang)] + [t(f"col.{k}", lang) for k in ("job", "user")] + [t("history.workflow", lang)] + [
        t(f"col.{k}", lang) for k in ("state", "cost", "node", "error")]
    return table(headers, rows, elem_id="jobs-table")


def workflows_table(studio: Studio, lang: str) -> str:
    rows = []
    for spec in studio.backend.library:
        names = stages.aliases(studio.backend.db, spec)
        listed = "<br>".join(f"<code>{esc(n)}</code> {esc(a['en'])} / {esc(a['zh'])}" for n, a in sorted(names.items()))
        rows.append([f"<b>{esc(spec.name)}</b>", esc(spec.title.get(lang)), esc(spec.category),
                     esc(len(spec.params)), listed])
    return table([t(f"col.{k}", lang) for k in ("name", "title", "category", "params", "stages")], rows,
                 elem_id="workflows-table")
