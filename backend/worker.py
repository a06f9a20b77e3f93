"""The backend's loops: dispatcher, lifecycle consumer and sweeper, as threads.

The studio runs one :class:`Worker` in-process; ``python -m backend worker`` runs one
without the UI. Several may run against the same servers at once (design §5).

Before its first dispatch pass the worker restores, from the database, the reservations
of the jobs already on nodes: after a restart the registry may have lost them (the
in-process one always has), and a dispatcher that ran first would see those slots free
and book them twice. Until that restore succeeds (the database or the registry may be
away at start) nothing is dispatched. Every loop rides out a service that is away
(``backend.errors.Unavailable``): it logs, waits and tries again.
"""

from __future__ import annotations

import logging
import threading

from .dispatcher import Dispatcher
from .errors import StudioError
from .lifecycle import LifecycleConsumer
from .runtime import Backend
from .sweeper import SweepPolicy, Sweeper

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        backend: Backend,
        *,
        dispatch_interval: float = 0.5,
        sweep_interval: float = 2.0,
        sweep_policy: SweepPolicy | None = None,
    ) -> None:
        self.backend = backend
        if sweep_policy is None:
            sweep_policy = SweepPolicy(agent_lost_after=float(backend.settings.agent_lost_seconds))
        self.dispatcher = Dispatcher(backend, interval=dispatch_interval)
        self.lifecycle = LifecycleConsumer(backend, on_slot_freed=self.dispatcher.wake)
        self.sweeper = Sweeper(backend, policy=sweep_policy, on_change=self.dispatcher.wake)
        self.sweep_interval = sweep_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "Worker":
        self.lifecycle.start()
        self._threads = [
            threading.Thread(target=self._dispatch, name="dispatcher", daemon=True),
            threading.Thread(target=self.sweeper.run, args=(self._stop, self.sweep_interval), name="sweeper", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("worker started")
        return self

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                restored = self.sweeper.restore_reservations()
                break
            except StudioError as exc:
                log.warning("cannot restore the reservations yet (%s); nothing is dispatched until then", exc)
                self._stop.wait(self.sweep_interval)
        else:
            return
        if restored:
            log.info("restored %d reservation(s) of jobs on nodes before dispatching", restored)
        self.dispatcher.run(self._stop)

    def wake(self) -> None:
        """Ask for a dispatch pass now (a job was queued or a slot freed)."""
        self.dispatcher.wake()

    def stop(self) -> None:
        self._stop.set()
        self.dispatcher.wake()
        self.lifecycle.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        log.info("worker stopped")
