"""``python -m tests.chaos.simproc TALLY [comfysim options]``: a comfysim process that also
notes, in the file TALLY, every prompt it is given, starts and finishes.

The chaos suite SIGKILLs these processes, so the tally is written with one unbuffered
``write`` per line to a file opened for appending: a line that was written survives the
kill, and a restarted node appends to the same file. Lines are ``boot`` (the process
started: its queue is empty), ``posted <prompt_id>``, ``started <prompt_id>``,
``deleted <prompt_id>`` (taken out of the queue before it ran) and
``finished <prompt_id> <success|error>``; "finished" is written just before the prompt
enters the history, so a kill in between over-reports a completion (the safe side for the
"no job runs twice" check).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from comfysim import __main__ as comfysim_main
from comfysim.prompt_queue import PromptQueue, QueueItem


def _install_tally(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(*words: str) -> None:
        os.write(fd, (" ".join(words) + "\n").encode())

    put, get, done, delete, wipe = PromptQueue.put, PromptQueue.get, PromptQueue.task_done, PromptQueue.delete, PromptQueue.wipe
    note("boot")

    def counting_put(self: PromptQueue, item: QueueItem) -> None:
        note("posted", item.prompt_id)
        put(self, item)

    def counting_get(self: PromptQueue, timeout: float | None = None) -> Any:
        task = get(self, timeout)
        if task is not None:
            note("started", task[1].prompt_id)
        return task

    def counting_done(self: PromptQueue, task_id: int, entry: dict[str, Any]) -> None:
        item = self._running.get(task_id)
        if item is not None:
            note("finished", item.prompt_id, str(entry.get("status", {}).get("status_str")))
        done(self, task_id, entry)

    def counting_delete(self: PromptQueue, prompt_id: str) -> bool:
        deleted = delete(self, prompt_id)
        if deleted:
            note("deleted", prompt_id)
        return deleted

    def counting_wipe(self: PromptQueue) -> None:
        for item in self.current()[1]:
            note("deleted", item[1])
        wipe(self)

    PromptQueue.put = counting_put  # type: ignore[method-assign]
    PromptQueue.delete = counting_delete  # type: ignore[method-assign]
    PromptQueue.wipe = counting_wipe  # type: ignore[method-assign]
    PromptQueue.get = counting_get  # type: ignore[method-assign]
    PromptQueue.task_done = counting_done  # type: ignore[method-assign]


if __name__ == "__main__":
    _install_tally(sys.argv[1])
    sys.exit(comfysim_main.main(sys.argv[2:]))
