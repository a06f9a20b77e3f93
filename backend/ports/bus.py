"""The message bus: jobs to agents, lifecycle events to the backend, events to users.

Three kinds of traffic with different guarantees:

- **jobs**: one durable queue per node; a job is published with a confirm and acked by
  the agent only after ComfyUI accepted it, so it is delivered at least once.
- **lifecycle**: one durable queue of agent events for the backend (``submitted``,
  ``started``, ``output``, ``succeeded``, ``failed`` …), published with confirms, consumed
  by one active consumer at a time so events of a job are applied in order.
- **user events**: transient; routed per user to every studio process, which hands them
  to that user's browser sessions. Bounded and lossy by design: the database is the truth.

Messages are JSON-serialisable dicts. Handlers run on a thread of the bus, never on the
caller's; a delivery may be acked or rejected from any thread.

**Dead letters.** A consumer that cannot handle a message *for the message's own reasons*
(it names a file that does not exist, it cannot be read, it keeps crashing the handler)
sets it aside with :meth:`Delivery.dead_letter` instead of dropping it: the message and
the reason wait in a dead-letter queue, in order, until an operator lists them
(:meth:`Bus.dead_letters`), puts them back on their queue (:meth:`Bus.replay_dead_letters`)
or discards them. A message that fails because a service is away is never dead-lettered:
that is retried (``backend.errors.Unavailable``).
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

Message = Mapping[str, Any]

#: The queue name of dead letters that came from the lifecycle queue; job queues are
#: ``jobs.<node id>``.
LIFECYCLE = "lifecycle"


@dataclass(frozen=True)
class DeadLetter:
    """A message set aside by a consumer, with why."""

    #: The message as it arrived (``{"unreadable": text}`` if it was not a JSON object).
    body: dict[str, Any]
    reason: str
    #: The logical queue it came from and goes back to on replay: ``lifecycle`` or ``jobs.<node id>``.
    queue: str = LIFECYCLE
    failed_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "queue": self.queue, "body": self.body, "reason": self.reason, "failed_at": self.failed_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DeadLetter":
        return cls(body=dict(data["body"]), reason=str(data["reason"]), queue=str(data["queue"]),
                   failed_at=float(data["failed_at"]), id=str(data["id"]))


class Delivery(abc.ABC):
    """One received message that must be settled exactly once."""

    body: dict[str, Any]
    #: True when the message was delivered before and not acked (a crash or a reconnect).
    redelivered: bool

    @abc.abstractmethod
    def ack(self) -> None:
        """The message is done; it will not come back."""

    @abc.abstractmethod
    def reject(self, *, requeue: bool) -> None:
        """Give the message back (``requeue``) or drop it."""

    @abc.abstractmethod
    def dead_letter(self, reason: str) -> None:
        """Settle the message by setting it aside in the dead-letter queue with ``reason``.

        Returns once the dead-letter queue has it; raises ``BusError`` otherwise, and the
        delivery then stays unsettled (settle it later, or it is redelivered).
        """


class Subscription(abc.ABC):
    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving; unsettled deliveries go back to the queue."""


JobHandler = Callable[[Delivery], None]
EventHandler = Callable[[dict[str, Any]], None]


class Bus(abc.ABC):
    """Interface of the message bus. Every method is safe to call from any thread."""

    @abc.abstractmethod
    def publish_job(self, node_id: str, message: Message) -> None:
        """Put a job on ``node_id``'s durable queue; returns once the broker has it."""

    @abc.abstractmethod
    def consume_jobs(self, node_id: str, handler: JobHandler, *, prefetch: int = 1) -> Subscription:
        """Deliver ``node_id``'s jobs to ``handler`` (at most ``prefetch`` unsettled)."""

    @abc.abstractmethod
    def publish_lifecycle(self, message: Message) -> None:
        """Send an agent event to the backend; returns once the broker has it."""

    @abc.abstractmethod
    def consume_lifecycle(self, handler: JobHandler, *, prefetch: int = 1) -> Subscription:
        """Deliver agent events to ``handler``, in order; settle each delivery. With
        ``prefetch`` > 1 up to that many are unsettled at once (a consumer that looks at
        each event as it arrives and applies them behind); the handler must never raise
        for those, since a requeued event would come back behind the ones after it."""

    @abc.abstractmethod
    def publish_user_event(self, user_id: int, event: Message) -> None:
        """Send ``event`` to every studio process that listens to user events."""

    @abc.abstractmethod
    def subscribe_user_events(self, handler: EventHandler) -> Subscription:
        """Receive every user's events (``event["user_id"]`` says whose)."""

    @abc.abstractmethod
    def job_queue_depth(self, node_id: str) -> int:
        """Messages waiting in ``node_id``'s job queue (for monitoring)."""

    @abc.abstractmethod
    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, oldest first; listing changes nothing."""

    @abc.abstractmethod
    def replay_dead_letters(self, ids: Collection[str] | None = None) -> list[str]:
        """Put dead letters (all, or those whose id is in ``ids``) back on the queue they
        came from, behind what waits there; the ids replayed. The others stay, in order."""

    @abc.abstractmethod
    def discard_dead_letters(self, ids: Collection[str]) -> list[str]:
        """Delete the dead letters whose id is in ``ids``; the ids deleted."""

    def close(self) -> None:
        """Close connections; subscriptions end and unsettled deliveries are requeued."""
