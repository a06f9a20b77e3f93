"""ComfyUI's PromptQueue: a priority heap of prompts, the running set and the history.

All of it is in memory and lost on restart, like the real server. Every change calls
``on_change`` so the server can broadcast the ``status`` message ComfyUI sends.
"""

from __future__ import annotations

import copy
import heapq
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_HISTORY = 10_000


@dataclass(order=True)
class QueueItem:
    """One queued prompt; ordered by (number, prompt_id) like ComfyUI's heap tuples."""

    number: float
    prompt_id: str
    prompt: dict[str, Any] = field(compare=False)
    extra_data: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)
    # Keys ComfyUI keeps out of the queue listing and history (paid-API credentials).
    sensitive: dict[str, Any] = field(compare=False, default_factory=dict)

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class PromptQueue:
    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._mutex = threading.RLock()
        self._not_empty = threading.Condition(self._mutex)
        self._heap: list[QueueItem] = []
        self._running: dict[int, QueueItem] = {}
        self._task_counter = 0
        self._history: dict[str, dict[str, Any]] = {}
        self._flags: dict[str, Any] = {}
        self._closed = False

    # ---- queue ---------------------------------------------------------------------------

    def put(self, item: QueueItem) -> None:
        with self._mutex:
            heapq.heappush(self._heap, item)
            self._on_change()
            self._not_empty.notify()

    def get(self, timeout: float | None = None) -> tuple[int, QueueItem] | None:
        """Next prompt to run, or None on timeout, on a flag being set, or on close."""
        with self._not_empty:
            if not self._heap and not self._closed:
                self._not_empty.wait(timeout)
            if not self._heap or self._closed:
                return None
            item = heapq.heappop(self._heap)
            task_id = self._task_counter
            self._running[task_id] = item
            self._task_counter += 1
            self._on_change()
            return task_id, item

    def task_done(self, task_id: int, entry: dict[str, Any]) -> None:
        """Move a finished prompt from running to history (oldest evicted past the cap)."""
        with self._mutex:
            item = self._running.pop(task_id)
            if len(self._history) >= MAX_HISTORY:
                self._history.pop(next(iter(self._history)))
            self._history[item.prompt_id] = {"prompt": item.as_list(), **entry}
            self._on_change()

    def current(self) -> tuple[list[list[Any]], list[list[Any]]]:
        with self._mutex:
            running = [item.as_list() for item in self._running.values()]
            pending = [item.as_list() for item in self._heap]
            return copy.deepcopy(running), copy.deepcopy(pending)

    def remaining(self) -> int:
        with self._mutex:
            return len(self._heap) + len(self._running)

    def running_ids(self) -> list[str]:
        with self._mutex:
            return [item.prompt_id for item in self._running.values()]

    def wipe(self) -> None:
        with self._mutex:
            self._heap = []
            self._on_change()

    def delete(self, prompt_id: str) -> bool:
        """Drop one pending prompt; running prompts are untouched (use /interrupt).

        Like ComfyUI's ``delete_queue_item``, deleting the only pending prompt wipes the
        queue, which announces the change itself, and then announces it again: two
        ``status`` messages where any other delete sends one."""
        with self._mutex:
            for index, item in enumerate(self._heap):
                if item.prompt_id == prompt_id:
                    if len(self._heap) == 1:
                        self._heap = []
                        self._on_change()  # wipe_queue's own queue_updated()
                    else:
                        self._heap.pop(index)
                        heapq.heapify(self._heap)
                    self._on_change()
                    return True
            return False

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            self._not_empty.notify_all()

    # ---- history -------------------------------------------------------------------------

    def history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        with self._mutex:
            if prompt_id is not None:
                entry = self._history.get(prompt_id)
                return {prompt_id: copy.deepcopy(entry)} if entry is not None else {}
            if offset < 0 and max_items is not None:
                offset = len(self._history) - max_items
            out: dict[str, Any] = {}
            for index, key in enumerate(self._history):
                if index >= offset:
                    out[key] = copy.deepcopy(self._history[key])
                    if max_items is not None and len(out) >= max_items:
                        break
            return out

    def wipe_history(self) -> None:
        with self._mutex:
            self._history.clear()

    def delete_history(self, prompt_id: str) -> None:
        with self._mutex:
            self._history.pop(prompt_id, None)

    # ---- flags set by POST /free, acted on by the worker between prompts -----------------

    def set_flag(self, name: str, value: Any) -> None:
        with self._mutex:
            self._flags[name] = value
            self._not_empty.notify()

    def take_flags(self) -> dict[str, Any]:
        with self._mutex:
            flags, self._flags = self._flags, {}
            return flags
