"""The shapes of every message on the bus, in one place.

Three families:

- **job** (studio → agent, per node queue): what to run and how to report it.
- **lifecycle** (agent → backend): changes the database must record — ``submitted``,
  ``started``, ``output``, ``succeeded``, ``failed``, ``requeue``.
- **user events** (backend or agent → the user's browser sessions): ``queued``,
  ``started``, ``stage``, ``progress``, ``preview``, ``output``, ``succeeded``,
  ``failed``, ``cancelled``, ``notice``. Always ``{type, job_id, ts, ...}``; image bytes
  never travel here, only asset ids.

Messages are plain dicts (JSON on the wire); the TypedDicts document them and let type
checkers help, the helpers build them so that no field is forgotten.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal, NotRequired, TypedDict


class Upload(TypedDict):
    """An input the node must have before the prompt runs."""

    asset_id: str  # sha256 of the stored bytes
    #: The same id under its old name, for agents one release behind (the workers upgrade
    #: first, docs/architecture.md); dropped in the release after.
    asset: NotRequired[str]
    #: File name the prompt refers to; derived from the hash, so the same bytes always
    #: get the same name and a node that has them needs no upload.
    name: str
    kind: Literal["image", "mask"]
    #: A presigned GET of the bytes when the asset store is an object store: the agent
    #: fetches the input without a studio credential or a shared mount.
    url: NotRequired[str]
    #: For masks: the name of the image whose alpha channel the mask replaces.
    original: NotRequired[str]


class StageAlias(TypedDict):
    en: str
    zh: str


class JobMessage(TypedDict):
    job_id: str
    attempt: int
    #: ``{job_id}-{attempt}``: ComfyUI's prompt id, so a redelivered message of the same
    #: attempt is recognised on the node and never runs twice.
    prompt_id: str
    user_id: int
    workflow: str
    prompt: dict[str, Any]
    uploads: list[Upload]
    output_nodes: list[str]
    stages: dict[str, StageAlias]
    estimate_seconds: float
    sent_at: float
    #: Set by the sweeper when it sends again a job the database has on the node already
    #: (submitted or running) that its agent does not follow: the agent may follow or
    #: settle it, never submit it.
    adopt_only: NotRequired[bool]
    #: With ``adopt_only``: whether the database saw the job start.
    started: NotRequired[bool]


LifecycleType = Literal["submitted", "started", "output", "succeeded", "failed", "requeue"]

USER_EVENT_TYPES = (
    "queued",
    "started",
    "stage",
    "progress",
    "preview",
    "output",
    "succeeded",
    "failed",
    "cancelled",
    "notice",
)


def upload_name(asset_id: str, *, mask_on: str | None = None) -> str:
    """The node-side file name of an input: content-addressed, in our own subfolder.

    A mask is merged on the node into its image's alpha channel, so the merged file
    depends on both: it is named after the pair, and the same mask drawn on another
    picture never reuses an old merge.
    """
    if mask_on is None:
        return f"studio/{asset_id}.png"
    pair = hashlib.sha256(f"{mask_on}:{asset_id}".encode()).hexdigest()
    return f"studio/{pair}-mask.png"


def prompt_id_of(job_id: str, attempt: int) -> str:
    return f"{job_id}-{attempt}"


def job_of_prompt(prompt: str) -> tuple[str, int] | None:
    """Inverse of :func:`prompt_id_of`; None for prompts that are not ours."""
    job_id, _, attempt = prompt.rpartition("-")
    if not job_id or not attempt.isdigit():
        return None
    return job_id, int(attempt)


def lifecycle(kind: LifecycleType, /, *, job_id: str, attempt: int, node_id: str, **fields: Any) -> dict[str, Any]:
    """An agent → backend event. Extra fields by kind:

    - ``submitted``: ``prompt_id``
    - ``started``: ``started_at`` (ComfyUI's clock, epoch seconds, or None)
    - ``output``: ``asset_id`` (sha256), ``graph_node`` (graph node id), ``position``, ``kind``,
      ``format``, ``size``, ``width``, ``height``, ``seconds``
    - ``succeeded``: ``seconds`` (run time measured on the node), ``ended_at`` (ComfyUI's
      clock, epoch seconds, or None)
    - ``failed``: ``error_type``, ``message``, ``graph_node`` (graph node id or None), ``ended_at``
    - ``requeue``: ``reason`` (the job never started; put it back in the backlog)
    """
    return {"type": kind, "job_id": job_id, "attempt": attempt, "node_id": node_id, "ts": time.time(), **fields}


def user_event(kind: str, job_id: str | None, /, **fields: Any) -> dict[str, Any]:
    """An event for a user's sessions. Fields by kind:

    - ``stage``: ``graph_node``, ``alias`` ({en, zh})
    - ``progress``: ``value``, ``max`` (steps of the current node), ``fraction`` (0–1 overall)
    - ``preview`` / ``output``: ``asset_id``, ``kind``
    - ``failed``: ``reason`` ({en, zh}), ``refunded`` (credits)
    - ``succeeded``: ``outputs`` (asset ids); ``notice``: ``text`` ({en, zh})
    """
    if kind not in USER_EVENT_TYPES:
        raise ValueError(f"unknown user event type {kind!r}")
    return {"type": kind, "job_id": job_id, "ts": time.time(), **fields}


def failure_reason(stage: str | None, error_type: str, message: str) -> dict[str, str]:
    """The creator-facing reason of a failure ({en, zh}), naming the stage where it happened."""
    lines = (message or "").strip().splitlines()
    short = lines[0][:200] if lines else ""
    detail_en = f": {short}" if short else ""
    detail_zh = f"：{short}" if short else ""
    where_en = f" during “{stage}”" if stage else ""
    where_zh = f"在“{stage}”阶段" if stage else ""
    return {
        "en": f"The job failed{where_en}: {error_type}{detail_en}. Your credits were refunded.",
        "zh": f"任务{where_zh}失败：{error_type}{detail_zh}。积分已退还。",
    }
