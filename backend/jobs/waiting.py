"""How long a job waits for a node: the "all nodes are busy, about N s" question at
submit, and a queued job's place in the backlog with its expected wait.

Both use one estimate, so a queued job's card continues the figure its confirmation
promised: the work ahead of it (queued jobs' estimates and what is left of the jobs
holding the capable nodes' slots, each scaled by its node's measured speed), drained
in parallel by the capable nodes. What a started job has already run is subtracted,
so the figure counts down as the nodes work.
"""

from __future__ import annotations

import datetime as dt
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from backend.jobs.backlog import _NEVER
from backend.db.models import Job, User
from backend.errors import NodeUnavailable, NotFound
from backend.jobs.placement import CapabilityCache, Needs, capable
from backend.ports.registry import NodeView, Registry
from backend.runtime import Backend
from backend.jobs.state import JobState
from backend.jobs.store import JobRecord


@dataclass(frozen=True)
class QueueWait:
    """A queued job's place: how many jobs get a node before it, and about how long."""

    ahead: int
    seconds: float


_CAPS: "weakref.WeakKeyDictionary[Registry, CapabilityCache]" = weakref.WeakKeyDictionary()


def capabilities(registry: Registry) -> CapabilityCache:
    """One capability cache per registry, kept between calls: a node's capabilities are
    hundreds of class names, re-read only when its ``caps_version`` changes."""
    caps = _CAPS.get(registry)
    if caps is None:
        caps = _CAPS.setdefault(registry, CapabilityCache(registry))
    return caps


def able_nodes(backend: Backend, needs: Needs) -> list[NodeView]:
    """The online nodes that can run a job with ``needs``; NodeUnavailable if none."""
    caps = capabilities(backend.registry)
    able = [v for v in backend.registry.nodes() if capable(v, caps.get(v), needs)]
    if not able:
        raise NodeUnavailable(
            "No online node can run this workflow right now (it needs models or nodes no online host has). "
            "Try again later or ask an administrator.",
            zh="目前没有在线节点能运行此工作流（缺少所需的模型或节点）。请稍后再试或联系管理员。",
        )
    return able


def busy_seconds(backend: Backend, able: Sequence[NodeView], *, now: float | None = None) -> float:
    """What is left of the work holding the slots of ``able`` (node speed applied)."""
    prompt_ids = {prompt_id: view for view in able for prompt_id in view.reservations}
    if not prompt_ids:
        return 0.0
    by_job = {prompt_id.rsplit("-", 1)[0]: prompt_id for prompt_id in prompt_ids}
    with backend.db.read() as s:
        started = dict(s.execute(select(Job.id, Job.started_at).where(Job.id.in_(list(by_job)))).all())
    now = time.time() if now is None else now
    total = 0.0
    for job_id, prompt_id in by_job.items():
        view = prompt_ids[prompt_id]
        planned = view.reservations[prompt_id] * view.state.speed
        began = started.get(job_id)
        ran = max(0.0, now - _timestamp(began)) if began is not None else 0.0
        total += max(0.0, planned - ran)
    return total


def expected_wait(backend: Backend, able: Sequence[NodeView], queued_seconds: float) -> float:
    """Seconds until ``queued_seconds`` of estimated work ahead and the busy slots drain."""
    speed = sum(v.state.speed for v in able) / len(able)
    ahead = queued_seconds * speed + busy_seconds(backend, able)
    # Each slot ahead drains in parallel on its own node.
    return max(1.0, ahead / len(able))


def wait_if_busy(backend: Backend, needs: Needs) -> float | None:
    """None if a capable node has a free slot now, else the expected wait in seconds
    behind every queued job. Raises NodeUnavailable when no online node can run it."""
    able = able_nodes(backend, needs)
    if any(v.free_slots for v in able):
        return None
    with backend.db.read() as s:
        queued = s.scalar(select(func.coalesce(func.sum(Job.estimate_seconds), 0.0)).where(Job.state == JobState.QUEUED))
    return expected_wait(backend, able, float(queued or 0.0))


def queue_wait(backend: Backend, job: JobRecord) -> QueueWait:
    """Where a queued job stands in the fair backlog (:mod:`backend.jobs.backlog`): jobs are
    taken one per user in turn, users served least recently first, so the jobs ahead are
    this user's older ones and, of every other user, as many as this job's turn."""
    with backend.db.read() as s:
        ranked = (
            select(Job.id, Job.user_id, Job.estimate_seconds,
                   func.row_number().over(partition_by=Job.user_id, order_by=(Job.created_at, Job.id)).label("n"))
            .where(Job.state == JobState.QUEUED)
            .subquery()
        )
        turn = s.scalar(select(ranked.c.n).where(ranked.c.id == job.id))
        if turn is None:
            return QueueWait(ahead=0, seconds=0.0)
        first = (select(Job.user_id, func.min(Job.created_at).label("first")).where(Job.state == JobState.QUEUED)
                 .group_by(Job.user_id).subquery())
        rows = s.execute(
            select(ranked.c.user_id, ranked.c.n, ranked.c.estimate_seconds, User.last_served_at, first.c.first)
            .join(User, User.id == ranked.c.user_id)
            .join(first, first.c.user_id == ranked.c.user_id)
            .where(ranked.c.n <= turn)
        ).all()
    order = {user: (_utc(served or _NEVER), _utc(earliest)) for user, _, _, served, earliest in rows}
    mine = order.get(job.user_id)
    if mine is None:  # dispatched between the two queries (PostgreSQL shows each the latest commits)
        return QueueWait(ahead=0, seconds=0.0)
    ahead, seconds = 0, 0.0
    for user, n, estimate, _, _ in rows:
        if (user == job.user_id and n < turn) or (user != job.user_id and (n < turn or order[user] < mine)):
            ahead += 1
            seconds += estimate or 0.0
    try:
        able = able_nodes(backend, Needs.of(backend.library.get(job.workflow), dict(job.params), job.memory_mb))
    except (NodeUnavailable, NotFound):  # no capable node, or the workflow is gone: no figure to give
        return QueueWait(ahead=ahead, seconds=0.0)
    return QueueWait(ahead=ahead, seconds=expected_wait(backend, able, seconds))


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def _timestamp(moment: dt.datetime) -> float:
    return _utc(moment).timestamp()

