"""ComfyUI's vocabulary → the studio's: pure functions, no I/O.

The follower (``following.py``) feeds websocket messages and history entries through
these helpers and publishes what they return; keeping them free of I/O keeps the mapping
readable and testable on its own.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from backend.jobs.messages import StageAlias

#: Longest failure message sent on; the rest of ComfyUI's text is in the node's log.
MAX_MESSAGE = 300

_IMAGE_EXT = {"png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"}
_VIDEO_EXT = {"mp4", "webm", "mov", "mkv", "avi"}
_AUDIO_EXT = {"flac", "wav", "mp3", "ogg", "opus", "m4a"}

# Absolute server paths (POSIX or Windows) inside exception messages: they describe the
# GPU host's disk, which users must not see.
_PATH = re.compile(r"(?:[A-Za-z]:\\|/)(?:[\w .+@-]+[\\/])+([\w .+@-]+)")

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4


def nodes_to_run(prompt: dict[str, Any], output_nodes: list[str]) -> set[str]:
    """The output nodes and everything upstream of them (ComfyUI runs nothing else)."""
    pending = [node for node in output_nodes if node in prompt] or list(prompt)
    seen: set[str] = set()
    while pending:
        graph_node_id = pending.pop()
        if graph_node_id in seen:
            continue
        seen.add(graph_node_id)
        for value in prompt[graph_node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
                pending.append(value[0])
    return seen


@dataclass
class Progress:
    """The overall fraction of one prompt: finished nodes plus the running node's steps,
    over the nodes that will really run (cached ones excluded)."""

    to_run: set[str]
    done: set[str] = field(default_factory=set)
    current: str | None = None
    step: float = 0.0  # 0..1 within the current node

    def cached(self, nodes: list[str]) -> None:
        self.to_run -= set(nodes)

    def node_started(self, graph_node_id: str) -> None:
        if self.current is not None:
            self.done.add(self.current)
        self.current, self.step = graph_node_id, 0.0

    def node_step(self, value: float, maximum: float) -> None:
        self.step = min(max(value / maximum, 0.0), 1.0) if maximum > 0 else 0.0

    @property
    def fraction(self) -> float:
        total = len(self.to_run) or 1
        done = len(self.done & self.to_run)
        running = self.step if self.current in self.to_run else 0.0
        return round(min((done + running) / total, 1.0), 4)


def stage_alias(stages: dict[str, StageAlias], graph_node_id: str | None) -> StageAlias:
    """The workflow's name for a graph node, or the graph node's id when the spec names none."""
    if graph_node_id is not None and graph_node_id in stages:
        return stages[graph_node_id]
    label = graph_node_id or "?"
    return {"en": label, "zh": label}


def stage_fields(stages: dict[str, StageAlias], graph_node_id: str | None) -> dict[str, Any]:
    """Where a failure happened, for the ``failed`` lifecycle event: the ``graph_node``, the
    ``stage`` name the backend stores and shows (English), and ``stage_alias`` with both
    languages. All None when no node is to blame."""
    if graph_node_id is None:
        return {"graph_node": None, "stage": None, "stage_alias": None}
    alias = stage_alias(stages, graph_node_id)
    return {"graph_node": graph_node_id, "stage": alias["en"], "stage_alias": alias}


def short_message(text: str) -> str:
    """First non-empty line, server paths reduced to file names, bounded length."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    line = _PATH.sub(lambda m: m.group(1), line)
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def failure_fields(payload: dict[str, Any], stages: dict[str, StageAlias]) -> dict[str, Any]:
    """``failed`` lifecycle fields from an ``execution_error`` payload (no traceback)."""
    error_type = str(payload.get("exception_type") or "Exception").rsplit(".", 1)[-1]
    return {
        "error_type": error_type,
        "message": short_message(payload.get("exception_message") or error_type),
        **stage_fields(stages, _graph_node(payload)),
    }


def interrupted_fields(payload: dict[str, Any], stages: dict[str, StageAlias]) -> dict[str, Any]:
    return {"error_type": "Interrupted", "message": "ComfyUI interrupted the prompt", **stage_fields(stages, _graph_node(payload))}


def _graph_node(payload: dict[str, Any]) -> str | None:
    graph_node_id = payload.get("node_id")  # ComfyUI's own name for the graph node
    return None if graph_node_id is None else str(graph_node_id)


@dataclass(frozen=True)
class Outcome:
    """How a finished prompt ended, read from its history entry."""

    status: str  # "success", "error" or "interrupted"
    seconds: float | None  # execution_start → end, from ComfyUI's own timestamps
    payload: dict[str, Any]
    #: When the prompt started and ended, on ComfyUI's clock (epoch seconds), if it says.
    started_at: float | None = None
    ended_at: float | None = None


def comfy_time(payload: dict[str, Any]) -> float | None:
    """A ComfyUI message's ``timestamp`` (epoch milliseconds) in epoch seconds, if it has one."""
    stamp = payload.get("timestamp")
    return stamp / 1000.0 if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else None


def history_outcome(entry: dict[str, Any]) -> Outcome:
    """Classify a history entry through its ``status.messages`` (ComfyUI's ``GET /history/<prompt_id>``)."""
    status = entry.get("status") or {}
    messages = {name: data for name, data in status.get("messages", []) if isinstance(data, dict)}
    start = comfy_time(messages.get("execution_start", {}))
    for kind, label in (("execution_error", "error"), ("execution_interrupted", "interrupted"), ("execution_success", "success")):
        if kind in messages:
            end = comfy_time(messages[kind])
            seconds = end - start if start is not None and end is not None else None
            return Outcome(label, seconds, messages[kind], started_at=start, ended_at=end)
    if status.get("status_str") == "success" or status.get("completed"):
        return Outcome("success", None, {})
    return Outcome("error", None, {"exception_type": "Exception", "exception_message": "ComfyUI recorded an error without details"})


def output_files(ui: dict[str, Any]) -> list[dict[str, Any]]:
    """File refs (``filename``, ``subfolder``, ``type``) in a node's UI output, in order.

    Shapes differ per node (``images``, ``gifs``, ``audio``, ``video`` …); any list of
    dicts with a ``filename`` counts, anything else (text, flags) is not a file.
    """
    refs: list[dict[str, Any]] = []
    for values in ui.values():
        if isinstance(values, list):
            refs.extend(v for v in values if isinstance(v, dict) and isinstance(v.get("filename"), str))
    return refs


def file_key(graph_node_id: str, ref: dict[str, Any]) -> str:
    """Identity of one output file, so a file seen on the socket is not fetched again from history."""
    return f"{graph_node_id}|{ref.get('type', 'output')}|{ref.get('subfolder', '')}|{ref['filename']}"


def output_kind(filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext in _IMAGE_EXT:
        return "image"
    if ext in _VIDEO_EXT:
        return "video"
    if ext in _AUDIO_EXT:
        return "audio"
    return "file"


def checkpoint_of(prompt: dict[str, Any]) -> str | None:
    """The checkpoint a graph loads (what the node will have in memory after running it)."""
    for node in prompt.values():
        name = node.get("inputs", {}).get("ckpt_name")
        if isinstance(name, str):
            return name
    return None


@dataclass(frozen=True)
class Preview:
    prompt_id: str | None  # None: a legacy frame, belongs to whatever runs now
    image: bytes


def parse_preview(frame: bytes) -> Preview | None:
    """Decode a binary frame; None for frames that are not preview images."""
    if len(frame) < 8:
        return None
    (event,) = struct.unpack(">I", frame[:4])
    if event == PREVIEW_IMAGE:
        return Preview(None, frame[8:])
    if event == PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            meta = json.loads(frame[8 : 8 + length])
        except ValueError:
            return None
        return Preview(meta.get("prompt_id"), frame[8 + length :])
    return None
