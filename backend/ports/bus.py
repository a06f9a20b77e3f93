"""The message bus: jobs to agents, lifecycle events to the backend, events to users.

Three kinds of traffic with different guarantees (design §3, §7):

- **jobs**: one durable queue per node; a job is published with a confirm and acked by
  the agent only after ComfyUI accepted it, so it is delivered at least once.
- **lifecycle**: one durable queue of agent events for the backend (``submitted``,
  ``started``, ``output``, ``succeeded``, ``failed`` …), published with confirms, consumed
  by one active consumer at a time so events of a job are applied in order.
- **user events**: transient; routed per user to every studio process, which hands them
  to that user's browser sessions. Bounded and lossy by design: the database is the truth.

Messages are JSON-serialisable dicts. Handlers run on a thread of the bus, never on the
caller's; a delivery may be acked or rejected from any thread.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

Message = Mapping[str, Any]


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
    def consume_lifecycle(self, handler: JobHandler) -> Subscription:
        """Deliver agent events to ``handler``, in order; settle each delivery."""

    @abc.abstractmethod
    def publish_user_event(self, user_id: int, event: Message) -> None:
        """Send ``event`` to every studio process that listens to user events."""

    @abc.abstractmethod
    def subscribe_user_events(self, handler: EventHandler) -> Subscription:
        """Receive every user's events (``event["user_id"]`` says whose)."""

    @abc.abstractmethod
    def job_queue_depth(self, node_id: str) -> int:
        """Messages waiting in ``node_id``'s job queue (for monitoring)."""

    def close(self) -> None:
        """Close connections; subscriptions end and unsettled deliveries are requeued."""
