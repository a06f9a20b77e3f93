"""Chinese and English: one table of UI strings, used by Gradio in the browser and by
handlers in Python.

Gradio translates static texts (labels, buttons, Markdown) in the browser from
``navigator.language``; what a handler returns must be translated here. To keep both
sides on the same language, the chosen language lives in a cookie (``studio_lang``)
and with the account; :mod:`studio.language` makes the page's ``navigator.language``
report it before Gradio starts. Without a choice both follow the browser's language.
"""

from __future__ import annotations

from collections.abc import Mapping

import gradio as gr

from backend.errors import StudioError
from backend.workflows import Library

LANG_COOKIE = "studio_lang"
LANGS = ("en", "zh")

STRINGS: dict[str, tuple[str, str]] = {
    # key: (English, Chinese)
    "brand": ("AIGC Studio", "AIGC 创作工坊"),
    "nav.create": ("Create", "创作"),
    "nav.history": ("History", "历史"),
    "nav.account": ("Account", "账户"),
    "nav.admin": ("Admin", "管理"),
    "nav.signout": ("Sign out", "退出登录"),
    "nav.lang": ("中文", "English"),
    "credits": ("credits", "积分"),
    "create.pick": ("Choose a workflow", "选择工作流"),
    "create.use": ("Use this workflow", "使用此工作流"),
    "create.inputs": ("Inputs", "输入"),
    "create.beginner": ("Beginner", "新手"),
    "create.expert": ("Expert", "专家"),
    "create.go": ("Create", "开始创作"),
    "create.cancel": ("Cancel", "取消"),
    "create.queue_anyway": ("Queue anyway", "仍然排队"),
    "create.never_mind": ("Not now", "暂不"),
    "create.mask": ("Paint the area to change", "涂抹需要修改的区域"),
    "create.stored_input": ("Using the stored file from your earlier job; upload another to replace it.",
                            "正在使用之前任务中保存的文件；上传新文件即可替换。"),
    # Gradio 6.31's ImageEditor never sends a value it was given by the server (the
    # event hangs), so "draw again" keeps the canvas empty and reuses the stored mask.
    "create.stored_mask": ("Using the area painted for your earlier job; upload the picture again to paint a new one.",
                           "正在使用之前任务中涂抹的区域；重新上传图片即可重新涂抹。"),
    "create.new_seed": ("New seed", "换个种子"),
    "create.no_presets": ("The fields above are all this workflow needs; Expert has the fine settings.",
                          "上面的内容就是此工作流所需的全部设置；更细的设置在“专家”中。"),
    "create.no_expert": ("This workflow has no further settings.", "此工作流没有更多设置。"),
    "create.need_text": ("Fill in “{label}” to create.", "填写“{label}”后即可创作。"),
    "create.price": ("Price", "价格"),
    "create.need_input": ("Upload {label} to see the price.", "上传{label}后显示价格。"),
    "create.idle": ("Your results appear here.", "创作结果将显示在这里。"),
    "create.no_workflows": ("No workflows are installed.", "尚未安装任何工作流。"),
    "state.queued": ("Waiting for a node", "等待节点"),
    "state.dispatched": ("Sent to a node", "已发送到节点"),
    "state.submitted": ("Waiting on the node", "节点排队中"),
    "state.running": ("Running", "运行中"),
    "state.succeeded": ("Done", "已完成"),
    "state.failed": ("Failed", "失败"),
    "state.cancelled": ("Cancelled", "已取消"),
    "progress.steps": ("step {value}/{max}", "第 {value}/{max} 步"),
    "progress.eta": ("about {seconds} s left", "预计还需 {seconds} 秒"),
    "progress.finishing": ("finishing", "即将完成"),
    "progress.ahead": ("{count} jobs ahead", "前面还有 {count} 个任务"),
    "progress.wait": ("about {seconds} s wait", "预计等待 {seconds} 秒"),
    "progress.preview": ("Preview", "预览"),
    "progress.outputs": ("Results", "结果"),
    "progress.refunded": ("{amount} credits refunded.", "已退还 {amount} 积分。"),
    "progress.cost": ("{amount} credits", "{amount} 积分"),
    "progress.download": ("Download", "下载"),
    "notice.succeeded": ("Your {workflow} job is done. See History.", "您的“{workflow}”任务已完成，请到历史中查看。"),
    "notice.failed": ("Your {workflow} job failed: {reason}", "您的“{workflow}”任务失败：{reason}"),
    "notice.cancelled": ("Your {workflow} job was cancelled; {amount} credits refunded.",
                         "您的“{workflow}”任务已取消，已退还 {amount} 积分。"),
    "history.title": ("Your jobs", "我的任务"),
    "history.empty": ("No jobs yet. Start on the Create page.", "还没有任务。去“创作”页开始吧。"),
    "history.again": ("Draw again", "再画一次"),
    "history.refresh": ("Refresh", "刷新"),
    "history.older": ("Older jobs →", "更早的任务 →"),
    "history.newer": ("← Newer jobs", "← 较新的任务"),
    "history.when": ("When", "时间"),
    "history.workflow": ("Workflow", "工作流"),
    "history.job": ("Job", "任务"),
    "history.open": ("Open", "查看"),
    "history.status": ("Status", "状态"),
    "history.cost": ("Cost", "花费"),
    "history.refund": ("Refund", "退款"),
    "history.outputs": ("Results", "结果"),
    "account.title": ("Your account", "我的账户"),
    "admin.limits": ("Limits", "限额"),
    "limits.intro": ("Per-user limits (0: none). A user's override wins over the role's default; 'default' removes it.",
                     "每个用户的限额（0 表示不限）。用户的单独设置优先于角色默认值；填 'default' 可移除。"),
    "limits.user": ("User name", "用户名"),
    "limits.limit": ("Limit", "限额"),
    "limits.value": ("Value (a number, or 'default')", "数值（数字或 'default'）"),
    "limits.show": ("Show", "查看"),
    "limits.set": ("Set", "设置"),
    "limits.name": ("Limit", "限额"),
    "limits.applies": ("Applies", "生效值"),
    "limits.override": ("Override", "单独设置"),
    "limits.none": ("none", "不限"),
    "limits.usage": ("Usage", "用量"),
    "tokens.title": ("### API tokens", "### API 令牌"),
    "tokens.intro": ("Personal access tokens for the REST API (see /api/docs). A token is shown once, when it is made.",
                     "用于 REST API 的个人访问令牌（见 /api/docs）。令牌只在创建时显示一次。"),
    "tokens.name": ("What it is for", "用途"),
    "tokens.scope": ("Scope", "权限"),
    "tokens.days": ("Expires after (days, 0: never)", "有效天数（0 表示永不过期）"),
    "tokens.create": ("Make a token", "创建令牌"),
    "tokens.id": ("Token id", "令牌编号"),
    "tokens.revoke": ("Revoke", "撤销"),
    "tokens.made": ("Your new token — copy it now, it is not shown again:", "新令牌如下，请立即复制，之后不再显示："),
    "tokens.revoked": ("Token {id} revoked.", "令牌 {id} 已撤销。"),
    "tokens.none": ("No tokens yet.", "还没有令牌。"),
    "tokens.prefix": ("Token", "令牌"),
    "tokens.created": ("Made", "创建于"),
    "tokens.expires": ("Expires", "过期"),
    "tokens.last_used": ("Last used", "最近使用"),
    "tokens.never": ("never", "从不"),
    "account.balance": ("Balance", "余额"),
    "account.redeem": ("Redeem a code", "兑换积分码"),
    "account.code": ("Code", "积分码"),
    "account.redeem_go": ("Redeem", "兑换"),
    "account.redeemed": ("{amount} credits added.", "已增加 {amount} 积分。"),
    "account.ledger": ("Ledger", "账单明细"),
    "account.password": ("Password and sessions", "密码与登录"),
    "account.current_password": ("Current password", "当前密码"),
    "account.new_password": ("New password", "新密码"),
    "account.new_password2": ("Repeat the new password", "再次输入新密码"),
    "account.change_password": ("Change password", "修改密码"),
    "account.password_changed": ("Your password was changed and you were signed out everywhere. Sign in again "
                                 "with the new password.", "密码已修改，您已在所有设备上退出登录。请使用新密码重新登录。"),
    "account.passwords_differ": ("The new passwords differ.", "两次输入的新密码不一致。"),
    "account.signout_all": ("Sign out on all devices", "在所有设备上退出登录"),
    "ledger.kind": ("Kind", "类型"),
    "ledger.amount": ("Amount", "数量"),
    "ledger.balance": ("Balance after", "变动后余额"),
    "ledger.note": ("What for", "用途"),
    "ledger.job": ("{title} · job {job}", "{title} · 任务 {job}"),
    "ledger.refund_failed": ("the job failed", "任务失败"),
    "ledger.refund_cancelled": ("cancelled", "已取消"),
    "ledger.welcome": ("Welcome credits", "新用户赠送"),
    "ledger.code": ("Redeem code {hint}", "积分码 {hint}"),
    "ledger.by": ("From {actor}", "来自 {actor}"),
    "kind.grant": ("Grant", "赠送"),
    "kind.recharge": ("Recharge", "充值"),
    "kind.redeem": ("Code", "兑换"),
    "kind.charge": ("Job", "任务扣费"),
    "kind.refund": ("Refund", "退款"),
    "kind.adjust": ("Adjustment", "调整"),
    "admin.title": ("Administration", "管理后台"),
    "admin.denied": ("This page is for administrators.", "此页面仅限管理员访问。"),
    "admin.nodes": ("Nodes", "节点"),
    "admin.users": ("Users", "用户"),
    "admin.codes": ("Redeem codes", "积分码"),
    "admin.jobs": ("Jobs", "任务"),
    "admin.workflows": ("Workflows", "工作流"),
    "admin.signup": ("Sign-up", "注册"),
    "admin.refresh": ("Refresh", "刷新"),
    "admin.user_name": ("User name", "用户名"),
    "admin.password": ("Password", "密码"),
    "admin.role": ("Role", "角色"),
    "admin.create_user": ("Create user", "创建用户"),
    "admin.credits": ("Credits", "积分"),
    "admin.note": ("Note", "备注"),
    "admin.grant": ("Grant credits", "发放积分"),
    "admin.disable": ("Disable", "停用"),
    "admin.enable": ("Enable", "启用"),
    "admin.count": ("How many codes", "数量"),
    "admin.expires": ("Expires after days (0 = never)", "有效天数（0 表示永久）"),
    "admin.make_codes": ("Create batch", "生成一批"),
    "admin.new_codes": ("New codes (shown once)", "新积分码（仅显示一次）"),
    "admin.failed_only": ("Failed jobs only", "只看失败任务"),
    "admin.workflow": ("Workflow", "工作流"),
    "admin.node": ("Graph node", "图节点"),
    "admin.alias_en": ("Alias (English)", "别名（英文）"),
    "admin.alias_zh": ("Alias (Chinese)", "别名（中文）"),
    "admin.save_alias": ("Save alias", "保存别名"),
    "admin.signup_mode": ("Who may sign up", "谁可以注册"),
    "admin.welcome": ("Welcome credits for new accounts", "新账户赠送积分"),
    "admin.save": ("Save", "保存"),
    "admin.saved": ("Saved.", "已保存。"),
    "admin.done": ("Done.", "完成。"),
    # The Dead letters tab of the admin page (studio/pages/dead_letters.py).
    "admin.dead_letters": ("Dead letters", "死信"),
    "dead.ids": ("Dead letter ids (space or comma separated)", "死信编号（以空格或逗号分隔）"),
    "dead.replay": ("Replay", "重放"),
    "dead.replay_all": ("Replay all", "全部重放"),
    "dead.discard": ("Discard", "丢弃"),
    "dead.replayed": ("{count} dead letter(s) replayed.", "已重放 {count} 条死信。"),
    "dead.discarded": ("{count} dead letter(s) discarded.", "已丢弃 {count} 条死信。"),
    "dead.not_found": ("Not found: {ids}.", "未找到：{ids}。"),
    "dead.none": ("No dead letters: every agent event was applied.", "没有死信：所有节点事件均已处理。"),
    "dead.id": ("ID", "编号"),
    "dead.when": ("Set aside", "搁置时间"),
    "dead.queue": ("Queue", "队列"),
    "dead.event": ("Job / event", "任务 / 事件"),
    "dead.node": ("Node", "节点"),
    "dead.reason": ("Why", "原因"),
    "col.node": ("Node", "节点"),
    "col.state": ("State", "状态"),
    "col.kind": ("Kind", "类型"),
    "col.slots": ("Slots used", "已用槽位"),
    "col.node_queue": ("Node queue", "节点队列"),
    "col.vram": ("VRAM free", "空闲显存"),
    "col.speed": ("Speed (s per estimated s)", "速度（实际秒/预估秒）"),
    "node.speed": ("{ratio} ({times}× the estimate's pace)", "{ratio}（预估速度的 {times} 倍）"),
    "col.checkpoint": ("Loaded model", "已加载模型"),
    "col.capabilities": ("Capabilities", "能力"),
    "col.id": ("ID", "编号"),
    "col.account": ("Account", "账户状态"),
    "col.created": ("Created", "创建时间"),
    "col.last_login": ("Last sign-in", "最近登录"),
    "col.storage": ("Storage", "存储"),
    "admin.storage_of": ("{size} in {files} files", "{files} 个文件，共 {size}"),
    "col.batch": ("Batch", "批次"),
    "col.codes": ("Codes", "数量"),
    "col.redeemed": ("Redeemed", "已兑换"),
    "col.expires": ("Expires", "过期时间"),
    "col.job": ("Job", "任务"),
    "col.user": ("User", "用户"),
    "col.cost": ("Cost", "花费"),
    "col.error": ("Error", "错误"),
    "col.name": ("Name", "名称"),
    "col.title": ("Title", "标题"),
    "col.category": ("Category", "类别"),
    "col.params": ("Parameters", "参数"),
    "col.stages": ("Stage aliases", "阶段别名"),
    "user.active": ("active", "正常"),
    "user.disabled": ("disabled", "已停用"),
    "node.types": ("{count} node types", "{count} 种节点"),
    "signup.open": ("Anyone", "所有人"),
    "signup.invite": ("With an invite code", "凭邀请码"),
    "signup.off": ("Nobody (closed)", "关闭注册"),
    "node.online": ("online", "在线"),
    "node.offline": ("offline", "离线"),
    "node.simulated": ("simulated", "模拟节点"),
    "node.real": ("GPU", "GPU"),
    "node.none": ("No node is online.", "没有在线节点。"),
}


def normalize(lang: str | None) -> str:
    """"zh", "zh-CN", "zh_TW" → "zh"; anything else → "en"."""
    return "zh" if (lang or "").strip().lower().startswith("zh") else "en"


def from_headers(cookie: str | None, accept_language: str | None) -> str:
    """The language of a request: the cookie if set, else the browser's first choice."""
    if cookie:
        return normalize(cookie)
    first = (accept_language or "").split(",")[0].split(";")[0]
    return normalize(first)


def lang_of(request: gr.Request | None) -> str:
    if request is None:
        return "en"
    cookies = getattr(request, "cookies", None) or {}
    headers = getattr(request, "headers", None) or {}
    return from_headers(cookies.get(LANG_COOKIE), headers.get("accept-language"))


def t(key: str, lang: str, **fields: object) -> str:
    en, zh = STRINGS[key]
    text = zh if lang == "zh" else en
    return text.format(**fields) if fields else text


def pick(texts: Mapping[str, str] | None, lang: str) -> str:
    """One side of an ``{en, zh}`` message from the backend."""
    if not texts:
        return ""
    return texts.get(lang) or texts.get("en") or ""


def error_text(exc: StudioError, lang: str) -> str:
    """A backend error as the form shows it: the field's label is enough on a page that
    shows that label, so the parameter key the CLI needs ("Prompt (prompt)") is dropped."""
    text = exc.text(lang)
    key = getattr(exc, "param", None)
    if key:
        text = text.replace(f" ({key})", "").replace(f"（{key}）", "")
    return text


def build_i18n(library: Library) -> gr.I18n:
    """The browser-side table: UI strings plus every workflow's titles and field labels."""
    en: dict[str, str] = {}
    zh: dict[str, str] = {}
    for key, (e, z) in STRINGS.items():
        en[key], zh[key] = e, z
    for spec in library:
        pairs = {f"wf.{spec.name}.title": spec.title, f"wf.{spec.name}.description": spec.description}
        for param in spec.params:
            pairs[f"wf.{spec.name}.param.{param.name}"] = param.label
            if param.help is not None:
                pairs[f"wf.{spec.name}.help.{param.name}"] = param.help
        for preset in spec.presets:
            pairs[f"wf.{spec.name}.preset.{preset.name}"] = preset.label
        for key, text in pairs.items():
            en[key], zh[key] = text.en, text.zh
    return gr.I18n(en=en, **{"zh-CN": zh, "zh": zh})
