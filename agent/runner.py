"""The job side of the agent: takes jobs off the bus, runs them on ComfyUI, follows them
to their end and reports every step. This module wires its rooms and runs the job loop.

Threads and order:

- **intake** (``intake.py``) runs on the bus's consumer thread
  (:meth:`JobRunner.handle_delivery`): reservation check, idempotency check, uploads,
  ``POST /prompt``, ``submitted``, ack.
- **the job loop** (one thread, here) handles everything after submission: websocket
  messages (queued by the socket thread) applied by ``following.py``, preview frames,
  progress held back by the pacer (``publishing.py``) and the watchdog tick
  (``watchdog.py``) about once a second: cancellations, reconciliation, journal adoption
  and orphan clean-up (``recovery.py``).

One lock (``followed.py``) serialises the two around a submission.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from backend.ports.bus import Bus, Delivery
from backend.ports.registry import Registry

from .comfy import ComfyClient
from .config import AgentConfig
from .followed import Followed
from .following import Follower
from .intake import Intake
from .journal import Journal
from .outputs import OutputStore
from .publishing import Publisher, progress_deadlines
from .recovery import Recovery
from .reservations import Reservations
from .state import StateReporter
from .uploads import Uploader
from .watchdog import Watchdog

log = logging.getLogger("agent.runner.JobRunner")


class JobRunner:
    def __init__(
        self,
        config: AgentConfig,
        *,
        client: ComfyClient,
        bus: Bus,
        registry: Registry,
        uploader: Uploader,
        outputs: OutputStore,
        state: StateReporter,
        session: Callable[[], str | None],
        on_unreachable: Callable[[], None],
        on_registry_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._node = config.node_id
        self._stop = threading.Event()
        self._followed = Followed(config, state=state)
        self._reservations = Reservations(config, registry, stop=self._stop, on_lost=on_registry_lost)
        self._publisher = Publisher(bus, node_id=config.node_id)
        self._follower = Follower(config, client=client, outputs=outputs, state=state,
                                  followed=self._followed, publisher=self._publisher)
        self._recovery = Recovery(config, client=client, followed=self._followed, reservations=self._reservations)
        self._watchdog = Watchdog(config, client=client, session=session, followed=self._followed,
                                  follower=self._follower, recovery=self._recovery, reservations=self._reservations)
        self._intake = Intake(config, client=client, uploader=uploader, followed=self._followed,
                              publisher=self._publisher, recovery=self._recovery, reservations=self._reservations,
                              session=session, on_unreachable=on_unreachable, stop=self._stop)
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"agent-{self._node}-jobs", daemon=True)

    @property
    def journal(self) -> Journal:
        return self._followed.journal

    def start(self) -> None:
        """Adopt the jobs an earlier run of this agent left on ComfyUI, then run the job loop.

        Called before the agent consumes its queue, so a redelivered message of an adopted
        job finds it followed already."""
        with self._followed.lock:
            self._recovery.read_journal()
            self._followed.report()
        self._thread.start()

    def registry_reset(self) -> None:
        """The registry was found without this node's data (see ``reservations.py``)."""
        self._reservations.reset()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def active(self) -> dict[str, str]:
        """Active jobs as prompt_id → job_id (for the state and for operators)."""
        with self._followed.lock:
            return {pid: job.job_id for pid, job in self._followed.jobs.items()}

    def handle_delivery(self, delivery: Delivery) -> None:
        """Run one job message; settle the delivery exactly once (the bus's consumer thread)."""
        self._intake.handle_delivery(delivery)

    # ---- inputs from the other threads (quick: they only queue) -------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        self._inbox.put(("message", message))

    def on_binary(self, frame: bytes) -> None:
        if self._config.previews:
            self._inbox.put(("binary", frame))

    def on_session(self, client_id: str) -> None:
        """A new websocket session: events of earlier sessions are lost, so re-check all."""
        self._inbox.put(("session", client_id))

    # ---- the job loop -------------------------------------------------------------------

    def _loop(self) -> None:
        followed = self._followed
        next_tick = time.monotonic()
        while not self._stop.is_set():
            with followed.lock:
                wake = min([next_tick, *progress_deadlines(followed.jobs.values())])
            try:
                kind, item = self._inbox.get(timeout=max(0.0, wake - time.monotonic()))
            except queue.Empty:
                kind, item = "", None
            try:
                with followed.lock:
                    self._publisher.send_due_progress(followed.jobs.values())
                    if kind == "message":
                        self._follower.handle_message(item)
                    elif kind == "binary":
                        self._follower.handle_preview(item)
                    elif kind == "session":
                        for job in followed.jobs.values():
                            job.recheck = True
                        self._recovery.orphan_check = True
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self._config.poll_interval
                        self._watchdog.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive any single bad message
                log.exception("node_id=%s job loop: unexpected error (continuing)", self._node)
