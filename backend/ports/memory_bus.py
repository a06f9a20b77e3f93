"""The in-process message bus, for the embedded studio and tests.

It keeps the semantics that the rest of the code relies on with RabbitMQ: at-least-once
delivery with explicit settlement, redelivery of unsettled messages when a subscription
closes, one active consumer per queue in order, bounded, lossy user-event queues, and a
dead-letter queue. Messages are copied through JSON so nobody shares mutable state
through the bus. Everything lives as long as the process: dead letters included (the
admin page of the studio that holds the bus shows them).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Collection

from ..errors import BusError
from .bus import LIFECYCLE, Bus, DeadLetter, Delivery, EventHandler, JobHandler, Message, Subscription

log = logging.getLogger(__name__)

#: Per-subscriber bound for user events; the oldest are dropped first (like x-max-length
#: with drop-head on RabbitMQ).
USER_EVENT_BACKLOG = 10_000


def _encode(message: Message) -> str:
    # Messages are stored encoded, like on a broker: every delivery decodes its own copy, so
    # a handler that mutates its body changes neither the publisher's dict, nor a requeued
    # message, nor another subscriber's event.
    return json.dumps(message)


class _DeadLetters:
    """The bus's dead-letter queue: set-aside messages in the order they failed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.letters: list[DeadLetter] = []

    def add(self, letter: DeadLetter) -> None:
        with self.lock:
            self.letters.append(letter)

    def take(self, wanted: Collection[str] | None) -> list[DeadLetter]:
        """Remove and return the letters whose id is wanted (all if ``wanted`` is None)."""
        with self.lock:
            taken = [d for d in self.letters if wanted is None or d.id in wanted]
            self.letters = [d for d in self.letters if d not in taken]
            return taken


class _Queue:
    """A durable-style queue: messages wait until a consumer takes and settles them."""

    def __init__(self, name: str, dead: _DeadLetters, *, single_active: bool = False) -> None:
        self.name = name
        self.dead = dead
        self.cond = threading.Condition()
        self.ready: collections.deque[tuple[str, bool]] = collections.deque()
        #: Like x-single-active-consumer: only the oldest open subscription takes messages.
        self.single_active = single_active
        self.consumers: list[_QueueSubscription] = []

    def put(self, raw: str) -> None:
        with self.cond:
            self.ready.append((raw, False))
            self.cond.notify_all()


class _Delivery(Delivery):
    def __init__(self, sub: "_QueueSubscription", raw: str, redelivered: bool) -> None:
        self._sub = sub
        self.raw = raw
        self.body = json.loads(raw)
        self.redelivered = redelivered
        self._settled = False

    def ack(self) -> None:
        self._sub.settle(self, requeue=False)

    def reject(self, *, requeue: bool) -> None:
        self._sub.settle(self, requeue=requeue)

    def dead_letter(self, reason: str) -> None:
        if self._sub.settle(self, requeue=False):  # only an unsettled delivery is set aside
            self._sub.queue.dead.add(DeadLetter(body=json.loads(self.raw), reason=reason, queue=self._sub.queue.name))


class _QueueSubscription(Subscription):
    """One consumer thread taking messages while fewer than ``prefetch`` are unsettled."""

    def __init__(self, queue: _Queue, handler: JobHandler, prefetch: int) -> None:
        self.queue = queue
        self._handler = handler
        self._prefetch = max(1, prefetch)
        self._unsettled: list[_Delivery] = []
        self._closed = False
        with queue.cond:
            queue.consumers.append(self)
        self._thread = threading.Thread(target=self._run, name=f"bus-{queue.name}", daemon=True)
        self._thread.start()

    def _waiting(self) -> bool:
        q = self.queue
        if not q.ready or len(self._unsettled) >= self._prefetch:
            return True
        return q.single_active and q.consumers[0] is not self

    def _run(self) -> None:
        q = self.queue
        while True:
            with q.cond:
                while not self._closed and self._waiting():
                    q.cond.wait()
                if self._closed:
                    return
                raw, redelivered = q.ready.popleft()
                delivery = _Delivery(self, raw, redelivered)
                self._unsettled.append(delivery)
            try:
                self._handler(delivery)
            except Exception:
                log.exception("handler for queue %s failed; the message is requeued", q.name)
                delivery.reject(requeue=True)

    def settle(self, delivery: _Delivery, *, requeue: bool) -> bool:
        """Settle ``delivery``; False if it was settled already (or went back on close)."""
        q = self.queue
        with q.cond:
            if delivery._settled or delivery not in self._unsettled:
                return False  # like a stale delivery tag: settling twice is a no-op here
            delivery._settled = True
            self._unsettled.remove(delivery)
            if requeue:
                q.ready.appendleft((delivery.raw, True))
            q.cond.notify_all()
            return True

    def close(self) -> None:
        q = self.queue
        with q.cond:
            if self._closed:
                return
            self._closed = True
            q.consumers.remove(self)
            for delivery in reversed(self._unsettled):
                delivery._settled = True
                q.ready.appendleft((delivery.raw, True))
            self._unsettled.clear()
            q.cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


class _EventSubscription(Subscription):
    def __init__(self, bus: "MemoryBus", handler: EventHandler) -> None:
        self._bus = bus
        self._handler = handler
        self._cond = threading.Condition()
        self._events: collections.deque[str] = collections.deque(maxlen=USER_EVENT_BACKLOG)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bus-user-events", daemon=True)
        self._thread.start()

    def offer(self, event: str) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._events:
                    self._cond.wait()
                if self._closed:
                    return
                event = self._events.popleft()
            try:
                self._handler(json.loads(event))
            except Exception:
                log.exception("user-event handler failed; the event is dropped")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._bus._unsubscribe(self)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


class MemoryBus(Bus):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._subscriptions: list[Subscription] = []
        self._event_subs: list[_EventSubscription] = []
        self._dead = _DeadLetters()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("The in-process bus is closed; create a new bus.")

    def _queue(self, name: str, *, single_active: bool = False) -> _Queue:
        with self._lock:
            self._check_open()
            if name not in self._queues:
                self._queues[name] = _Queue(name, self._dead, single_active=single_active)
            return self._queues[name]

    def _consume(self, queue: _Queue, handler: JobHandler, prefetch: int) -> Subscription:
        sub = _QueueSubscription(queue, handler, prefetch)
        with self._lock:
            self._subscriptions.append(sub)
        return sub

    def publish_job(self, node_id: str, message: Message) -> None:
        self._queue(f"jobs.{node_id}").put(_encode(message))

    def consume_jobs(self, node_id: str, handler: JobHandler, *, prefetch: int = 1) -> Subscription:
        return self._consume(self._queue(f"jobs.{node_id}"), handler, prefetch)

    def _lifecycle(self) -> _Queue:
        return self._queue(LIFECYCLE, single_active=True)

    def publish_lifecycle(self, message: Message) -> None:
        self._lifecycle().put(_encode(message))

    def consume_lifecycle(self, handler: JobHandler, *, prefetch: int = 1) -> Subscription:
        return self._consume(self._lifecycle(), handler, prefetch)

    def publish_user_event(self, user_id: int, event: Message) -> None:
        body = _encode({**event, "user_id": user_id})
        with self._lock:
            self._check_open()
            subs = list(self._event_subs)
        for sub in subs:
            sub.offer(body)

    def subscribe_user_events(self, handler: EventHandler) -> Subscription:
        with self._lock:
            self._check_open()
        sub = _EventSubscription(self, handler)
        with self._lock:
            self._event_subs.append(sub)
            self._subscriptions.append(sub)
        return sub

    def _unsubscribe(self, sub: _EventSubscription) -> None:
        with self._lock:
            if sub in self._event_subs:
                self._event_subs.remove(sub)

    def job_queue_depth(self, node_id: str) -> int:
        q = self._queue(f"jobs.{node_id}")
        with q.cond:
            return len(q.ready)

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        with self._dead.lock:
            return list(self._dead.letters[:limit])

    def replay_dead_letters(self, ids: Collection[str] | None = None) -> list[str]:
        self._check_open()
        letters = self._dead.take(None if ids is None else set(ids))
        for letter in letters:
            self._queue(letter.queue, single_active=letter.queue == LIFECYCLE).put(_encode(letter.body))
        return [letter.id for letter in letters]

    def discard_dead_letters(self, ids: Collection[str]) -> list[str]:
        return [letter.id for letter in self._dead.take(set(ids))]

    def close(self) -> None:
        with self._lock:
            subs, self._subscriptions = self._subscriptions, []
            self._closed = True
        for sub in subs:
            sub.close()
