"""A job's live events as Server-Sent Events.

Each message is ``event: <kind>`` and ``data: <json>``:

- ``state``: the job record, first of all (and whenever the database says it moved);
- ``stage``: a graph node started (``{"stage": {"en", "zh"}, "graph_node"}``);
- ``progress``: ``{"value", "max"}`` of the running node;
- ``preview``: ``{"asset_id"}`` of a preview image (downloadable by its owner);
- ``output``: ``{"asset_id", "kind"}`` of an output;
- ``end``: the final job record (from the database, the truth); the stream closes.

``stage``, ``progress``, ``preview`` and ``output`` carry an ``id:``, the number of the
event in its job. A client that lost the stream reconnects with ``Last-Event-ID`` (a
browser's ``EventSource`` does so itself): after the ``state`` record it is given the
events after that one that it missed (the studio keeps a running job's last
``MAX_REPLAY`` of :mod:`studio.feed`), then the live ones.

Events on the bus are lossy; the database is re-read every few seconds, so the stream
always ends, with the right record, even if an event was lost. A comment line every
``KEEPALIVE_SECONDS`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from typing import Any

from backend import jobs
from backend.jobs.state import TERMINAL
from backend.jobs.payload import job_payload
from backend.jobs.queries import job_card

from ..context import Studio

DB_CHECK_SECONDS = 3.0
KEEPALIVE_SECONDS = 15.0
#: After a terminal event, how long to wait for the database to record the end.
SETTLE_SECONDS = 10.0
MAX_STREAM_SECONDS = 6 * 3600


def _message(kind: str, data: Any, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def last_event_id(header: str | None) -> int | None:
    """The event number a ``Last-Event-ID`` header names; None if it names none."""
    value = (header or "").strip()
    return int(value) if value.isdigit() and len(value) < 19 else None


def _translate(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    kind = event.get("type")
    if kind == "stage":
        return "stage", {"stage": event.get("alias"), "graph_node": event.get("graph_node")}
    if kind == "progress":
        return "progress", {"value": event.get("value", 0), "max": event.get("max", 0)}
    if kind == "preview" and event.get("asset_id"):
        return "preview", {"asset_id": event["asset_id"]}
    if kind == "output" and event.get("asset_id"):
        return "output", {"asset_id": event["asset_id"], "kind": event.get("kind") or "image"}
    return None


def event_stream(studio: Studio, user_id: int, job_id: str, *, resume_after: int | None = None) -> Iterator[bytes]:
    """The stream of one job the caller owns (checked before the stream starts); with
    ``resume_after``, the events after that one come first."""
    db = studio.backend.db
    # Watching before reading the job: no event is lost in between.
    with studio.feed.watch(user_id, job_id, replay_after=resume_after) as q:
        job = jobs.get(db, job_id, user_id=user_id)
        yield _message("state", job_payload(job_card(db, job_id)))
        state = job.state
        started = last_check = last_sent = time.monotonic()
        ending: float | None = None
        while state not in TERMINAL and time.monotonic() - started < MAX_STREAM_SECONDS:
            try:
                event = q.get(timeout=0.5)
            except queue.Empty:
                event = None
            now = time.monotonic()
            if event is not None:
                translated = _translate(event)
                if translated is not None:
                    yield _message(*translated, event_id=event.get("seq"))
                    last_sent = now
                if event.get("type") in TERMINAL and ending is None:
                    ending = now
            due = now - last_check >= DB_CHECK_SECONDS or (ending is not None and now - last_check >= 0.2)
            if due:
                last_check = now
                job = jobs.get(db, job_id)
                if job.state != state:
                    state = job.state
                    if state not in TERMINAL:
                        yield _message("state", job_payload(job_card(db, job_id)))
                        last_sent = now
            if ending is not None and now - ending > SETTLE_SECONDS:
                break  # the database has not recorded the end; the final record says where it stands
            if now - last_sent >= KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                last_sent = now
        yield _message("end", job_payload(job_card(db, job_id)))
