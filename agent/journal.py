"""The agent's job journal: a small durable record of every job it has on ComfyUI.

ComfyUI keeps its queue and history in memory and the agent acks a job message as soon as
the prompt is accepted, so after a crash of the agent (SIGKILL, OOM, power) nothing but
this journal remembers which prompts it submitted. One file per job,
``<state dir>/<node id>/<prompt id>.json``, holds the job message and whether the job had
started. It is written atomically (temporary file, fsync, rename) **before** the prompt is
posted, updated once when the job starts, and removed when the job is settled (its last
event published, or it was cancelled). A restarted agent adopts every entry whose
reservation is still held (see ``recovery.py``).

Only the agent of this node id reads and writes the folder; files that cannot be read are
logged and discarded (a torn write cannot happen with the rename, but a disk can fail).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.jobs.messages import JobMessage

log = logging.getLogger("agent.journal.Journal")

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,150}")
_REQUIRED = ("job_id", "attempt", "prompt_id", "user_id", "prompt", "output_nodes", "stages")


@dataclass(frozen=True)
class Entry:
    message: JobMessage
    started: bool = False

    @property
    def prompt_id(self) -> str:
        return self.message["prompt_id"]


class Journal:
    """The journal of one node. Thread-safe: each call touches one file and renames are atomic."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, prompt_id: str) -> Path:
        # Prompt ids are ours (``job-attempt``); anything else still gets a safe, stable name.
        name = prompt_id if _SAFE_NAME.fullmatch(prompt_id) and not prompt_id.startswith(".") else (
            "x-" + hashlib.sha256(prompt_id.encode()).hexdigest()
        )
        return self.directory / f"{name}.json"

    def write(self, message: JobMessage, *, started: bool = False) -> None:
        """Record (or update) one job; raises OSError if the disk refuses."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"message": message, "started": started}, separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path(message["prompt_id"]))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def remove(self, prompt_id: str) -> None:
        try:
            self._path(prompt_id).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the journal entry of %s: %s", prompt_id, exc)

    def entries(self) -> list[Entry]:
        """Every journaled job, oldest file first; unreadable files are discarded."""
        if not self.directory.is_dir():
            return []
        found: list[tuple[float, Entry]] = []
        for path in self.directory.iterdir():
            if path.name.startswith(".tmp-"):
                _unlink(path)  # a write that never got renamed: its prompt was never posted
                continue
            if path.suffix != ".json":
                continue
            try:
                raw: Any = json.loads(path.read_bytes())
                message = raw["message"]
                if not isinstance(message, dict) or any(key not in message for key in _REQUIRED):
                    raise ValueError("not a job message")
                entry = Entry(message=message, started=bool(raw.get("started")))  # type: ignore[arg-type]
                if path != self._path(entry.prompt_id):
                    raise ValueError("file name does not match its prompt id")
                found.append((path.stat().st_mtime, entry))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("discarding unreadable journal entry %s: %s", path, exc)
                _unlink(path)
        return [entry for _, entry in sorted(found, key=lambda item: item[0])]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
