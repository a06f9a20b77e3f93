"""Watching one job for the Create page: a generator fed by the event feed.

The handler registers with the :class:`~studio.feed.Feed` *before* reading the job from
the database (so no event falls between the read and the wait), renders the card from
the database plus the feed's snapshot, then blocks on its queue. User events are lossy,
so the database is re-read every few seconds; the final card always comes from the
database (outputs, refund, reason), which is the truth.

A browser session watches one job at a time: starting another (or reloading the page)
ends the previous generator at its next wake-up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from backend import jobs
from backend.errors import NotFound
from backend.jobs import queries
from backend.jobs.messages import failure_reason
from backend.jobs.store import JobRecord
from backend.jobs.waiting import QueueWait, queue_wait
from backend.jobs.state import TERMINAL, JobState

from .context import Studio
from .feed import Feed, JobSnapshot
from .i18n import lang_of, pick
from .layout import nav_for
from . import weights
from .render import ProgressView, idle_card, progress_card

POLL_SECONDS = 0.5
DB_CHECK_SECONDS = 3.0
#: Fewest seconds between two yields; bursts of progress events are coalesced.
MIN_YIELD_GAP = 0.15
#: Give up watching (not the job) after this long; the History page still has it.
MAX_WATCH_SECONDS = 6 * 3600
#: Below this share of the bar the job's own pace says little; the prediction leads.
PACE_FROM = 0.15


@dataclass
class Pace:
    """What the card's time figures come from, re-read at each database check: the
    running node's measured speed, or a queued job's place and wait (as of ``at``)."""

    speed: float = 1.0
    wait: QueueWait | None = None
    at: float = 0.0


def reason_of(job: JobRecord, lang: str, snap: JobSnapshot | None) -> str:
    if snap is not None and snap.reason:
        return pick(snap.reason, lang)
    if job.state == JobState.FAILED:
        return pick(failure_reason(job.error_stage, job.error_type or "Error", job.error_message or ""), lang)
    return ""


def pace_of(studio: Studio, job: JobRecord) -> Pace:
    backend = studio.backend
    if job.state == JobState.QUEUED:
        return Pace(wait=queue_wait(backend, job), at=time.time())
    view = next((v for v in backend.registry.nodes() if v.state.node_id == job.node_id), None)
    return Pace(speed=view.state.speed if view is not None and view.state.speed > 0 else 1.0, at=time.time())


def remaining_seconds(predicted: float, elapsed: float, fraction: float) -> float | None:
    """Seconds left of a running job: the prediction (estimate x the node's measured
    speed) counting down, handing over to the job's own pace as the bar fills. A job
    that outran its prediction has only its pace to go by; None when even that is
    unknown yet."""
    planned = predicted - elapsed
    paced = elapsed * (1 - fraction) / fraction if fraction > 0.02 else None
    if planned <= 0:
        return paced
    if paced is None or fraction < PACE_FROM:
        return planned
    return (1 - fraction) * planned + fraction * paced


def view_of(studio: Studio, job: JobRecord, snap: JobSnapshot, lang: str, pace: Pace | None = None) -> ProgressView:
    """The card for ``job``: its state from the database, the live details from the feed."""
    state = job.state if job.state in TERMINAL or snap.state not in TERMINAL else snap.state
    if state not in TERMINAL and snap.state == JobState.RUNNING:
        state = JobState.RUNNING
    spec = studio.backend.library.get(job.workflow) if job.workflow in studio.backend.library else None
    fraction = 0.0
    if spec is not None and snap.nodes:
        fraction = weights.fraction(spec, studio.feed.times.weights(spec), [n for n, _ in snap.nodes], snap.step)
    view = ProgressView(job_id=job.id, workflow=job.workflow, state=state, cost=job.cost,
                        stage=pick(snap.stage, lang), value=snap.value, max=snap.max, fraction=fraction,
                        preview=snap.preview, outputs=[(a, snap.kinds.get(a, "image")) for a in snap.outputs])
    if state in TERMINAL:
        card = queries.job_card(studio.backend.db, job.id)
        view.outputs = [(o.asset_id, o.kind) for o in card.outputs] or view.outputs
        view.refunded = card.refunded
        view.reason = reason_of(job, lang, snap)
        view.fraction = 1.0 if state == JobState.SUCCEEDED else view.fraction
        return view
    pace = pace or Pace()
    now = time.time()
    if state == JobState.QUEUED and pace.wait is not None:
        view.ahead = pace.wait.ahead
        view.wait_seconds = max(0.0, pace.wait.seconds - (now - pace.at)) if pace.wait.seconds else None
        return view
    started = snap.started_ts or (job.started_at.timestamp() if job.started_at else None)
    predicted = job.estimate_seconds * pace.speed
    if state == JobState.RUNNING and started:
        view.eta_seconds = remaining_seconds(predicted, max(0.0, now - started), fraction)
    else:
        view.eta_seconds = predicted
    return view


class Watcher:
    """The Create page's progress generator, one watched job per browser session."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._current: dict[str, object] = {}
        self._lock = threading.Lock()

    def _claim(self, session: str) -> object:
        token = object()
        with self._lock:
            self._current[session] = token
        return token

    def _still_mine(self, session: str, token: object) -> bool:
        with self._lock:
            return self._current.get(session) is token

    def _release(self, session: str, token: object) -> None:
        with self._lock:
            if self._current.get(session) is token:
                del self._current[session]

    def watch(self, job_id: str | None, request: gr.Request) -> Iterator[tuple[Any, Any, Any]]:
        """Yields ``(card html, cancel button update, header html)`` until the job ends.

        The header (with the balance) is sent when watching starts, which shows the
        debit of a job just created, and when the job ends (a refund).
        """
        if not job_id:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        user = self.studio.user(request)
        lang = lang_of(request)

        def nav() -> str:
            return nav_for(self.studio, "create", user_id=user.id, name=user.name, role=user.role, lang=lang)

        first = True
        for card, active in self._cards(user, job_id, lang, request):
            if card is None:  # superseded
                yield gr.skip(), gr.skip(), gr.skip()
                return
            yield card, gr.update(visible=active), (nav() if first or not active else gr.skip())
            first = False

    def _cards(self, user: Any, job_id: str, lang: str, request: gr.Request) -> Iterator[tuple[str | None, bool]]:
        """Yields ``(card html, whether the job is still active)``; a None card when a
        newer watch of the same session took over."""
        session = request.session_hash or f"user-{user.id}"
        token = self._claim(session)
        feed: Feed = self.studio.feed
        db = self.studio.backend.db
        try:
            with feed.watch(user.id, job_id) as events:
                try:
                    job = jobs.get(db, job_id, user_id=user.id)
                except NotFound:
                    yield idle_card(lang), False
                    return
                snap = feed.snapshot(user.id, job_id) or JobSnapshot(user_id=user.id, state=job.state)
                yield from self._follow(job, snap, events, lang, session, token)
        finally:
            self._release(session, token)

    def _follow(self, job: JobRecord, snap: JobSnapshot, events: queue.Queue[dict[str, Any]], lang: str,
                session: str, token: object) -> Iterator[tuple[str | None, bool]]:
        db = self.studio.backend.db
        pace = pace_of(self.studio, job) if job.state not in TERMINAL else None
        card = progress_card(view_of(self.studio, job, snap, lang, pace), lang)
        yield card, job.state not in TERMINAL and snap.state not in TERMINAL
        if job.state in TERMINAL:
            return
        began = last_check = last_yield = time.monotonic()
        while self._still_mine(session, token) and time.monotonic() - began < MAX_WATCH_SECONDS:
            try:
                event = events.get(timeout=POLL_SECONDS)
                Feed.apply(snap, event)
                if event.get("type") in TERMINAL or (event.get("type") == "started" and job.state == JobState.QUEUED):
                    last_check = 0.0  # read the job now
            except queue.Empty:
                pass
            now = time.monotonic()
            if now - last_check >= DB_CHECK_SECONDS:
                fresh = jobs.get(db, job.id)
                if fresh.state not in TERMINAL:
                    pace = pace_of(self.studio, fresh)  # the queue moved, the node's speed was re-measured
                job, last_check = fresh, now
            ended = job.state in TERMINAL
            if not self._still_mine(session, token):
                break
            if ended or now - last_yield >= MIN_YIELD_GAP:
                # Re-rendered even without events, so the time left counts down.
                fresh_card = progress_card(view_of(self.studio, job, snap, lang, pace), lang)
                if ended or fresh_card != card:
                    card, last_yield = fresh_card, now
                    yield card, not ended
            if ended:
                return
        # A newer watch took over this session's card. Gradio sends a generator's last
        # value again when it ends, so the last value must change nothing.
        yield None, False
