"""The backend's loops: dispatcher, lifecycle consumer and sweeper, as threads.

The studio runs one :class:`Worker` in-process; ``python -m backend worker`` runs one
without the UI. Several may run against the same servers at once.

Before its first dispatch pass, and whenever the registry lost its data, the dispatcher
has the sweeper restore, from the database, the reservations of the jobs already on
nodes (the in-process registry of a restarted studio always lost them); until that
worked nothing is dispatched (see ``dispatcher.py``). Every loop rides out a service
that is away (``backend.errors.Unavailable``): it logs, waits and tries again.
"""

from __future__ import annotations

import logging
import threading

from backend.jobs.dispatcher import Dispatcher
from backend.jobs.lifecycle import LifecycleConsumer
from backend.runtime import Backend
from backend.jobs.sweeper import SweepPolicy, Sweeper
from backend.jobs.webhooks import Deliverer

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
        self.lifecycle = LifecycleConsumer(backend, on_slot_freed=self.dispatcher.wake, sizing=self.dispatcher.sizing)
        self.sweeper = Sweeper(backend, policy=sweep_policy, on_change=self.dispatcher.wake)
        self.dispatcher.restore = self.sweeper.restore_reservations
        #: Tells webhooks the end of their jobs (backend/jobs/webhooks.py).
        self.webhooks = Deliverer(backend.db, backend.settings)
        self.sweep_interval = sweep_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "Worker":
        self.lifecycle.start()
        self._threads = [
            threading.Thread(target=self.dispatcher.run, args=(self._stop,), name="dispatcher", daemon=True),
            threading.Thread(target=self.sweeper.run, args=(self._stop, self.sweep_interval), name="sweeper", daemon=True),
            threading.Thread(target=self.webhooks.run, args=(self._stop,), name="webhooks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("worker started")
        return self

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
