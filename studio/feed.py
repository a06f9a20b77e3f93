"""The per-process consumer of user events: routes each event to the sessions of the
user it belongs to.

One bus subscription per studio process receives every user's events. The
:class:`Feed` keeps, in memory and bounded:

- per-job listener queues: the Create page's progress handler blocks on one;
- a per-job snapshot (stage, steps, latest preview, outputs), so a page opened in the
  middle of a job shows where it is instead of waiting for the next event;
- per-job numbers: each event of a job is numbered in the order it arrived, and the
  last ``MAX_REPLAY`` events a running job showed (stage, progress, preview, output) are
  kept, so a stream that broke off resumes after the last event it had
  (:meth:`Feed.watch` with ``replay_after``, the API's ``Last-Event-ID``);
- per-user notices (a job finished, failed or was cancelled), which every page polls
  to tell the user wherever they are;
- which user each preview belongs to: previews are blobs without an owner row, and the
  file route may serve one only to the user whose event named it.

Every replica receives every event, so each one builds the same picture. Events are
lossy by design; pages fall back to the database, which is the truth.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backend.ports.bus import Bus, Subscription
from backend.jobs.state import TERMINAL, JobState

from .weights import StageTimes

log = logging.getLogger(__name__)

MAX_JOBS = 5_000
MAX_NOTICES = 50
MAX_PREVIEWS = 20_000
#: A listener that nobody drains (a vanished browser) must not grow without end.
LISTENER_QUEUE = 1_000
#: Events of a running job kept for a stream that resumes (dropped when the job ends:
#: its end record then says what happened).
MAX_REPLAY = 64
#: The events a resumed stream is given again.
REPLAYED = ("stage", "progress", "preview", "output")


@dataclass
class JobSnapshot:
    """What the events said so far about one job."""

    user_id: int
    state: str = JobState.QUEUED
    workflow: str | None = None
    stage: dict[str, str] | None = None
    #: Graph nodes in the order they started, with the time each began.
    nodes: list[tuple[str, float]] = field(default_factory=list)
    value: float = 0
    max: float = 0
    started_ts: float | None = None
    preview: str | None = None
    outputs: list[str] = field(default_factory=list)
    #: Output asset -> "image", "video", "audio" (from the output events).
    kinds: dict[str, str] = field(default_factory=dict)
    reason: dict[str, str] | None = None
    refunded: int = 0
    #: The number of the job's latest event (each event routed carries its own as ``seq``).
    seq: int = 0
    #: The latest events of a running job, numbered, for :meth:`Feed.watch`'s replay.
    recent: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=MAX_REPLAY))

    @property
    def step(self) -> float:
        """How far the running node is through its own steps (0..1)."""
        return min(max(self.value / self.max, 0.0), 1.0) if self.max else 0.0


@dataclass(frozen=True)
class Notice:
    seq: int
    event: dict[str, Any]


class Feed:
    """Routes user events from the bus to per-job listeners, snapshots and notices."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        #: Seconds per graph node, learned from finished jobs: the progress bar's weights.
        self.times = StageTimes()
        self._lock = threading.Lock()
        self._listeners: dict[str, list[tuple[int, queue.Queue[dict[str, Any]]]]] = {}
        self._jobs: collections.OrderedDict[str, JobSnapshot] = collections.OrderedDict()
        self._notices: dict[int, collections.deque[Notice]] = {}
        self._seq = 0
        self._previews: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._subscription: Subscription | None = None

    def start(self) -> "Feed":
        if self._subscription is None:
            self._subscription = self.bus.subscribe_user_events(self._on_event)
            log.info("user event feed started")
        return self

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    # ---- the bus side -------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        try:
            self.publish(event)
        except Exception:  # one malformed event must not stop the feed for everyone
            log.exception("user event dropped: %r", event)

    def publish(self, event: dict[str, Any]) -> None:
        """Route one event (called on the bus thread; tests may call it directly)."""
        user_id, job_id, kind = event.get("user_id"), event.get("job_id"), event.get("type")
        if not isinstance(user_id, int):
            return
        with self._lock:
            if job_id:
                snap = self._snapshot(job_id, user_id)
                snap.seq += 1
                event = {**event, "seq": snap.seq}
                self.apply(snap, event)
                if kind in REPLAYED:
                    snap.recent.append(event)
                elif kind in TERMINAL:
                    snap.recent.clear()
                if kind == "succeeded" and snap.workflow and snap.nodes:
                    self.times.observe(snap.workflow, snap.nodes, float(event.get("ts") or snap.nodes[-1][1]))
            if kind == "preview" and event.get("asset_id"):
                self._previews[str(event["asset_id"])] = user_id
                while len(self._previews) > MAX_PREVIEWS:
                    self._previews.popitem(last=False)
            if kind in TERMINAL or kind == "notice":
                self._seq += 1
                box = self._notices.setdefault(user_id, collections.deque(maxlen=MAX_NOTICES))
                box.append(Notice(self._seq, dict(event)))
            targets = [q for owner, q in self._listeners.get(job_id or "", []) if owner == user_id]
        for q in targets:
            try:
                q.put_nowait(dict(event))
            except queue.Full:
                log.warning("job_id=%s node_id=%s a listener is not reading; event %s dropped", job_id,
                            event.get("node_id") or "-", kind)

    def _snapshot(self, job_id: str, user_id: int) -> JobSnapshot:
        snap = self._jobs.get(job_id)
        if snap is None:
            snap = self._jobs[job_id] = JobSnapshot(user_id=user_id)
            while len(self._jobs) > MAX_JOBS:
                self._jobs.popitem(last=False)
        return snap

    @staticmethod
    def apply(snap: JobSnapshot, event: dict[str, Any]) -> None:
        """Fold one event into a snapshot (the feed's own, or a watcher's copy)."""
        kind = event.get("type")
        if kind == "queued":
            snap.workflow = event.get("workflow") or snap.workflow
        elif kind == "started":
            snap.state, snap.started_ts = JobState.RUNNING, event.get("ts")
        elif kind == "stage":
            snap.state, snap.stage = JobState.RUNNING, event.get("alias")
            snap.value = snap.max = 0
            graph_node = event.get("graph_node")
            if graph_node is not None and (not snap.nodes or snap.nodes[-1][0] != str(graph_node)):
                snap.nodes.append((str(graph_node), float(event.get("ts") or 0.0)))
        elif kind == "progress":
            snap.state = JobState.RUNNING
            snap.value, snap.max = event.get("value", 0), event.get("max", 0)
        elif kind == "preview":
            snap.preview = event.get("asset_id")
        elif kind == "output":
            asset = event.get("asset_id")
            if asset and asset not in snap.outputs:
                snap.outputs.append(asset)
            if asset:
                snap.kinds[str(asset)] = str(event.get("kind") or "image")
        elif kind in TERMINAL:
            snap.state = kind
            snap.reason = event.get("reason")
            snap.refunded = int(event.get("refunded") or 0)
            if kind == "succeeded":
                for asset in event.get("outputs") or []:
                    if asset not in snap.outputs:
                        snap.outputs.append(asset)

    # ---- the session side ---------------------------------------------------------------

    @contextlib.contextmanager
    def watch(self, user_id: int, job_id: str, *, replay_after: int | None = None
              ) -> Iterator[queue.Queue[dict[str, Any]]]:
        """A queue of ``job_id``'s events while the block runs (only if ``user_id`` owns it).

        Register before reading the job's state from the database, so that no event
        between the read and the first ``get`` is lost. With ``replay_after`` (the
        ``seq`` of the last event a broken-off stream had), the kept events after it come
        first, each once: none is both replayed and routed.
        """
        q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=LISTENER_QUEUE)
        entry = (user_id, q)
        with self._lock:
            snap = self._jobs.get(job_id)
            if replay_after is not None and snap is not None and snap.user_id == user_id:
                for event in snap.recent:
                    if event["seq"] > replay_after:
                        q.put_nowait(dict(event))
            self._listeners.setdefault(job_id, []).append(entry)
        try:
            yield q
        finally:
            with self._lock:
                entries = self._listeners.get(job_id, [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._listeners.pop(job_id, None)

    def snapshot(self, user_id: int, job_id: str) -> JobSnapshot | None:
        with self._lock:
            snap = self._jobs.get(job_id)
            return copy.deepcopy(snap) if snap is not None and snap.user_id == user_id else None

    def notice_cursor(self, user_id: int) -> int:
        """The sequence number after which this user's future notices come."""
        with self._lock:
            box = self._notices.get(user_id)
            return box[-1].seq if box else 0

    def notices_since(self, user_id: int, cursor: int) -> tuple[int, list[dict[str, Any]]]:
        with self._lock:
            box = list(self._notices.get(user_id, ()))
        fresh = [n for n in box if n.seq > cursor]
        return (fresh[-1].seq if fresh else cursor), [n.event for n in fresh]

    def preview_owner(self, asset_id: str) -> int | None:
        with self._lock:
            return self._previews.get(asset_id)

    def listener_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._listeners.values())
