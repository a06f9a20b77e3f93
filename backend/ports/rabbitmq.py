"""The message bus on RabbitMQ (pika), for the distributed studio.

Topology under ``prefix`` (the reasons are in ``docs/bus.md``): a durable quorum queue per
node ``{prefix}.jobs.{node_id}`` with a delivery limit; a durable quorum queue
``{prefix}.lifecycle`` with a single active consumer; a topic exchange
``{prefix}.user-events`` to which each subscriber binds its own exclusive, bounded,
drop-head queue. Jobs and lifecycle events are persistent and confirmed, and acked
manually by consumers: at-least-once, so consumers must be idempotent.

Threads: pika connections are not thread-safe. A small pool of publisher threads, each
owning its own connection, takes confirmed publishes (jobs, lifecycle events) from one
queue, so one caller waiting for the broker's fsync of a quorum queue does not hold up
the others; callers wait on a future. User events go through one more publisher thread
whose channel is not in confirm mode: they are lossy by design (the database is the
truth), so the caller does not wait at all, and one thread keeps them in order. Each subscription owns a
connection with its I/O thread, plus a worker thread that runs the handler so long work
never starves heartbeats; acks from other threads reach the I/O thread through
``add_callback_threadsafe``. Lost connections are re-established with back-off.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from ..errors import BusError, ConfigError
from .bus import LIFECYCLE, Bus, DeadLetter, Delivery, EventHandler, JobHandler, Message, Subscription

T = TypeVar("T")

#: What a broken connection, socket or channel raises; everything else is a bug. (They
#: are shown with repr(): pika's connection errors often have an empty str().)
_TRANSIENT = (pika.exceptions.AMQPError, OSError)
#: How often an idle publisher or consumer services its connection (heartbeats, wake-ups).
_POLL_SECONDS = 1.0
_FIRST_RETRY_SECONDS = 0.1

#: The publisher whose thread this is: an op declares queues on *its* connection.
_current = threading.local()

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
#: Characters of an unreadable message kept in its dead letter.
_UNREADABLE_KEPT = 10_000


def _refusal(exc: BaseException) -> str | None:
    """What an operator should do about an error that retrying cannot fix, else None."""
    if isinstance(exc, pika.exceptions.UnroutableError):
        return "its queue is missing even after declaring it; check the broker's policies"
    if isinstance(exc, pika.exceptions.NackError):
        return "the broker refused it (nack); check memory and disk alarms with `rabbitmqctl status`"
    # Access refused, not found, or a queue that exists with other arguments.
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code in (403, 404, 406):
        return f"{exc.reply_text}; if a queue of that name exists with other arguments, delete it or use another prefix"
    return None


@dataclasses.dataclass(frozen=True)
class Topology:
    """Durable names a bus declared (server-named user-event queues vanish on their own)."""

    queues: frozenset[str]
    exchanges: frozenset[str]


@dataclasses.dataclass
class _Op:
    label: str
    fn: Callable[[BlockingChannel], Any]
    future: concurrent.futures.Future[Any]
    deadline: float


class _Publisher:
    """A thread that owns one publishing connection; broker calls go through such threads.

    Several publishers may share one ``ops`` queue (a pool): each op runs on whichever
    thread is free. ``confirm`` puts the channel in confirm mode (every publish waits for
    the broker's ack); without it a publish only writes to the socket.
    """

    log = logging.getLogger(f"{__name__}._Publisher")

    def __init__(self, bus: "RabbitBus", ops: "queue.Queue[_Op | None]", *, confirm: bool = True, name: str = "publisher") -> None:
        self._bus = bus
        self._ops = ops
        self._confirm = confirm
        self._name = name
        self._conn: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._stopping = False
        # Queues/exchanges declared on the current connection; cleared on reconnect so a
        # broker that lost its definitions gets them again before the next publish.
        self._declared: set[str] = set()
        self.last_error = "no error yet"
        self._thread = threading.Thread(target=self._run, name=f"{bus.prefix}-bus-{name}", daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def ensure(self, channel: BlockingChannel, name: str, declare: Callable[[BlockingChannel], object]) -> None:
        """Declare ``name`` once per connection (declarations are idempotent but cost a round trip)."""
        if name not in self._declared:
            declare(channel)
            self._declared.add(name)

    def forget(self, name: str) -> None:
        self._declared.discard(name)

    def _run(self) -> None:
        _current.publisher = self
        while True:
            try:
                op = self._ops.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                self._keep_alive()
                continue
            if op is None:
                break
            if op.future.set_running_or_notify_cancel():
                self._execute(op)
        self._disconnect()

    def _execute(self, op: _Op) -> None:
        delay = _FIRST_RETRY_SECONDS
        while True:
            try:
                op.future.set_result(op.fn(self._open_channel()))
                return
            except _TRANSIENT as exc:
                if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
                    self._channel = None
                    self._declared.clear()  # in case a declaration caused it
                elif not isinstance(exc, (pika.exceptions.UnroutableError, pika.exceptions.NackError)):
                    self._disconnect()
                refusal = _refusal(exc)
                self.last_error = repr(exc)
            except Exception as exc:  # noqa: BLE001 - a bug in an op must fail its caller, not kill this thread
                op.future.set_exception(exc)
                return
            remaining = op.deadline - time.monotonic()
            if refusal or remaining <= 0 or self._stopping:
                reason = refusal or f"unreachable ({self.last_error}); check that it is running, then retry"
                self.log.error("could not send %s: %s", op.label, reason)
                op.future.set_exception(BusError(f"RabbitMQ at {self._bus.where} did not take {op.label}: {reason}."))
                return
            self.log.warning("sending %s failed (%s); retrying in %.1f s", op.label, self.last_error, delay)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self._bus.max_reconnect_delay)

    def _open_channel(self) -> BlockingChannel:
        if self._conn is None or not self._conn.is_open:
            self._disconnect()
            self._conn = self._bus.connect(self._name)
            self._declared.clear()
            self.log.info("connected to RabbitMQ at %s", self._bus.where)
        if self._channel is None or not self._channel.is_open:
            self._channel = self._conn.channel()
            if self._confirm:
                self._channel.confirm_delivery()
        return self._channel

    def _keep_alive(self) -> None:
        # A BlockingConnection only answers heartbeats inside pika calls; an idle
        # publisher that never calls in would be dropped by the broker.
        if self._conn is not None and self._conn.is_open:
            try:
                self._conn.process_data_events(0)
            except _TRANSIENT as exc:
                self.last_error = repr(exc)
                self.log.warning("idle publishing connection lost (%s); reconnecting on next publish", self.last_error)
                self._disconnect()

    def _disconnect(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except _TRANSIENT:
                pass  # already broken: nothing left to close cleanly

    def stopping(self) -> None:
        """Give up retrying: the bus is closing (the pool puts the sentinels)."""
        self._stopping = True


class _PublisherPool:
    """Publisher threads behind one queue: :meth:`call` waits for the outcome,
    :meth:`send` does not (for traffic that may be lost, e.g. user events)."""

    def __init__(self, bus: "RabbitBus", *, size: int, confirm: bool, name: str) -> None:
        self._bus = bus
        self._ops: queue.Queue[_Op | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stopping = False
        self._publishers = [
            _Publisher(bus, self._ops, confirm=confirm, name=f"{name}-{i}" if size > 1 else name) for i in range(size)
        ]

    @property
    def last_error(self) -> str:
        return "; ".join(dict.fromkeys(p.last_error for p in self._publishers))

    def _put(self, label: str, fn: Callable[[BlockingChannel], T], timeout: float) -> _Op:
        op = _Op(label, fn, concurrent.futures.Future(), time.monotonic() + timeout)
        with self._lock:
            if self._stopping:
                raise BusError(f"The RabbitMQ bus is closed; cannot send {label}. Create a new bus.") from None
            self._ops.put(op)
        return op

    def call(self, label: str, fn: Callable[[BlockingChannel], T], timeout: float) -> T:
        """Run ``fn(channel)`` on a publisher thread; BusError if it fails or times out."""
        op = self._put(label, fn, timeout)
        try:
            return op.future.result(timeout)
        except concurrent.futures.TimeoutError:
            # If no thread has started it yet, none will; otherwise the outcome is
            # unknown (at-least-once: a retry by the caller may duplicate).
            op.future.cancel()
            raise BusError(
                f"RabbitMQ at {self._bus.where} did not confirm {label} within {timeout:g} s "
                f"(last error: {self.last_error}); it may or may not have been queued. "
                "Check that RabbitMQ is running and reachable, then retry."
            ) from None

    def send(self, label: str, fn: Callable[[BlockingChannel], object], timeout: float) -> None:
        """Queue ``fn(channel)`` and return at once; a failure is only logged (by the thread)."""
        self._put(label, fn, timeout)

    def stop(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            for publisher in self._publishers:
                publisher.stopping()
            for _ in self._publishers:
                self._ops.put(None)
        for publisher in self._publishers:
            if threading.current_thread() is not publisher.thread:
                publisher.thread.join(timeout=10)


class _Inbox:
    """Hand-off from an I/O thread to a worker thread; ``maxlen`` drops the oldest."""

    def __init__(self, maxlen: int | None = None) -> None:
        self._items: deque[Any] = deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def get(self) -> Any | None:
        """The next item, or None once closed."""
        with self._cond:
            while not self._closed and not self._items:
                self._cond.wait()
            return None if self._closed else self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._items.clear()  # not settled → the broker requeues them when the channel closes
            self._cond.notify_all()


class _Consumer(Subscription):
    """One connection + I/O thread consuming one queue, and a worker thread for the handler."""

    log = logging.getLogger(f"{__name__}._Consumer")

    def __init__(self, bus: "RabbitBus", queue_label: str, *, inbox_max: int | None = None) -> None:
        self.bus = bus
        self.queue_label = queue_label
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._conn: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.last_error = "no error yet"
        self._inbox = _Inbox(inbox_max)
        self._io = threading.Thread(target=self._run_io, name=f"bus-io-{queue_label}", daemon=True)
        self._worker = threading.Thread(target=self._run_worker, name=f"bus-{queue_label}", daemon=True)

    def start(self, timeout: float) -> None:
        """Start consuming; BusError unless the first consume succeeds within ``timeout``."""
        self._io.start()
        self._worker.start()
        if not self._ready.wait(timeout):
            self.close()
            raise BusError(
                f"Could not start consuming from {self.queue_label} on RabbitMQ at {self.bus.where} "
                f"within {timeout:g} s (last error: {self.last_error}). Check that RabbitMQ is "
                "running and reachable, then retry."
            ) from None

    # -- I/O thread ------------------------------------------------------------------
    def _setup(self, channel: BlockingChannel) -> None:
        """Declare what the queue needs and start ``basic_consume`` on ``channel``."""
        raise NotImplementedError

    def _reset_channel_state(self) -> None:
        """Reset per-channel state (called on the I/O thread, before consuming)."""

    def _run_io(self) -> None:
        delay = _FIRST_RETRY_SECONDS
        while not self._closing.is_set():
            conn: BlockingConnection | None = None
            try:
                conn = self.bus.connect(f"consumer {self.queue_label}")
                channel = conn.channel()
                with self._lock:
                    self._conn, self._channel = conn, channel
                    self._reset_channel_state()
                self._setup(channel)
                self.log.info("consuming from %s", self.queue_label)
                self._ready.set()
                delay = _FIRST_RETRY_SECONDS
                while not self._closing.is_set():
                    conn.process_data_events(time_limit=_POLL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any broker failure
                # Transient errors are expected here; anything else is logged with its
                # traceback, but a consumer whose thread dies would silently stop the
                # queue (a chaos run once saw the lifecycle queue go quiet that way).
                self.last_error = repr(exc)
                if not self._closing.is_set():
                    log_fn = self.log.warning if isinstance(exc, _TRANSIENT) else self.log.exception
                    log_fn("consuming from %s failed (%s); reconnecting in %.1f s", self.queue_label, self.last_error, delay)
                    self._closing.wait(delay)
                    delay = min(delay * 2, self.bus.max_reconnect_delay)
            finally:
                with self._lock:
                    self._conn, self._channel = None, None
                    self._reset_channel_state()
                if conn is not None and conn.is_open:
                    try:
                        conn.close()  # closing the channel requeues what we did not settle
                    except Exception:  # noqa: BLE001 - broken meanwhile; the broker requeues anyway
                        pass

    # -- worker thread ---------------------------------------------------------------
    def _handle(self, item: Any) -> None:
        raise NotImplementedError

    def _run_worker(self) -> None:
        while (item := self._inbox.get()) is not None:
            self._handle(item)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            conn = self._conn
        if conn is not None:
            try:
                conn.add_callback_threadsafe(lambda: None)  # wake process_data_events now
            except _TRANSIENT:
                pass  # the connection is already gone; the I/O thread sees _closing soon
        if threading.current_thread() is not self._io and self._io.is_alive():
            self._io.join(timeout=10)
        self._inbox.close()
        if threading.current_thread() is not self._worker and self._worker.is_alive():
            self._worker.join(timeout=10)
        self.bus._forget(self)


class _RabbitDelivery(Delivery):
    def __init__(self, consumer: "_JobConsumer", tag: int, raw: bytes, redelivered: bool) -> None:
        self._consumer = consumer
        self.tag = tag
        self.raw = raw
        self.body: dict[str, Any] = {}
        self.redelivered = redelivered

    def ack(self) -> None:
        self._consumer.settle(self, ack=True, requeue=False)

    def reject(self, *, requeue: bool) -> None:
        self._consumer.settle(self, ack=False, requeue=requeue)

    def dead_letter(self, reason: str) -> None:
        if not self._consumer.unsettled(self):
            return  # settled already, or stale after a reconnect: the broker redelivers it
        # Confirmed in the dead-letter queue before the ack: a crash in between leaves the
        # message in both places (at least once), never in neither.
        self._consumer.bus.publish_dead_letter(DeadLetter(body=self.body, reason=reason, queue=self._consumer.logical_queue))
        self.ack()


class _JobConsumer(_Consumer):
    """Manual-ack consumer of a durable queue (jobs of a node, or lifecycle events)."""

    log = logging.getLogger(f"{__name__}._JobConsumer")

    def __init__(self, bus: "RabbitBus", queue_name: str, declare: Callable[[BlockingChannel], object],
                 handler: JobHandler, prefetch: int) -> None:
        super().__init__(bus, f"queue {queue_name}")
        self._queue_name = queue_name
        #: The queue's name without the prefix, as dead letters name it ("lifecycle", "jobs.<node>").
        self.logical_queue = queue_name.removeprefix(f"{bus.prefix}.")
        self._declare = declare
        self._handler = handler
        self._prefetch = prefetch
        # Deliveries of the *current* channel not settled yet, by tag. Tags restart at 1 on
        # every channel, and acking a tag the channel does not know closes it with
        # PRECONDITION_FAILED; a delivery from before a reconnect (or settled already) is
        # therefore never in here, and settling it is a no-op — RabbitMQ redelivers it.
        self._unsettled: dict[int, _RabbitDelivery] = {}

    def _reset_channel_state(self) -> None:
        self._unsettled = {}

    def _setup(self, channel: BlockingChannel) -> None:
        channel.basic_qos(prefetch_count=self._prefetch)
        self._declare(channel)
        channel.basic_consume(self._queue_name, self._on_message, auto_ack=False)

    def _on_message(self, channel: BlockingChannel, method: Basic.Deliver,
                    properties: BasicProperties, body: bytes) -> None:
        delivery = _RabbitDelivery(self, method.delivery_tag, body, bool(method.redelivered))
        with self._lock:
            self._unsettled[delivery.tag] = delivery
        self._inbox.put(delivery)

    def _handle(self, item: Any) -> None:
        delivery: _RabbitDelivery = item
        with self._lock:
            if self._unsettled.get(delivery.tag) is not delivery:
                return  # from before a reconnect; the broker redelivers it
        try:
            delivery.body = json.loads(delivery.raw)
            if not isinstance(delivery.body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self.log.error("setting aside an unreadable message from %s: %s", self.queue_label, exc)
            delivery.body = {"unreadable": delivery.raw.decode("utf-8", errors="replace")[:_UNREADABLE_KEPT]}
            try:
                delivery.dead_letter(f"unreadable: {exc}")
            except BusError:
                delivery.reject(requeue=False)  # it can never be handled; better gone than looping
            return
        try:
            self._handler(delivery)
        except Exception:
            self.log.exception("handler for %s failed; the message is requeued", self.queue_label)
            delivery.reject(requeue=True)

    def unsettled(self, delivery: _RabbitDelivery) -> bool:
        with self._lock:
            return self._unsettled.get(delivery.tag) is delivery

    def settle(self, delivery: _RabbitDelivery, *, ack: bool, requeue: bool) -> None:
        with self._lock:
            if self._unsettled.get(delivery.tag) is not delivery:
                return  # settled already, or stale after a reconnect or close
            del self._unsettled[delivery.tag]
            conn, channel = self._conn, self._channel
        if conn is None or channel is None:
            return
        send = functools.partial(self._send, channel, delivery.tag, ack, requeue)
        if threading.current_thread() is self._io:
            send()
            return
        try:
            conn.add_callback_threadsafe(send)
        except _TRANSIENT:
            pass  # the connection just died: the broker requeues the delivery

    def _send(self, channel: BlockingChannel, tag: int, ack: bool, requeue: bool) -> None:
        """On the I/O thread: settle ``tag`` if ``channel`` is still the live one."""
        if self._channel is None or channel is not self._channel or not channel.is_open:
            return
        try:
            if ack:
                channel.basic_ack(tag)
            else:
                channel.basic_reject(tag, requeue=requeue)
        except _TRANSIENT as exc:
            self.log.warning("could not settle a delivery from %s (%s); it will be redelivered",
                             self.queue_label, repr(exc))


class _EventConsumer(_Consumer):
    """Auto-ack consumer of a private, bounded queue bound to the user-event exchange."""

    log = logging.getLogger(f"{__name__}._EventConsumer")

    def __init__(self, bus: "RabbitBus", handler: EventHandler) -> None:
        # The local inbox is bounded like the server queue: a slow handler loses the
        # oldest events, never the connection.
        super().__init__(bus, f"exchange {bus.user_exchange}", inbox_max=bus.user_event_backlog)
        self._handler = handler

    def _setup(self, channel: BlockingChannel) -> None:
        self.bus.declare_user_exchange(channel)
        # Server-named, exclusive: one per subscriber, deleted with its connection. Events
        # published while a subscriber reconnects are lost (by design: the DB is the truth).
        result = channel.queue_declare("", exclusive=True, auto_delete=True, arguments={
            "x-max-length": self.bus.user_event_backlog,
            "x-overflow": "drop-head",
        })
        name = result.method.queue
        channel.queue_bind(name, self.bus.user_exchange, routing_key="user.*")
        channel.basic_consume(name, self._on_message, auto_ack=True)

    def _on_message(self, channel: BlockingChannel, method: Basic.Deliver,
                    properties: BasicProperties, body: bytes) -> None:
        self._inbox.put(body)

    def _handle(self, item: Any) -> None:
        try:
            self._handler(json.loads(item))
        except Exception:
            self.log.exception("user-event handler for %s failed; the event is dropped", self.queue_label)


class RabbitBus(Bus):
    """:class:`Bus` on RabbitMQ (3.8+; tested on 3.10). Safe to use from any thread.

    ``url`` is an AMQP URL (``amqp://user:pass@host:5672/%2F``). ``publish_timeout``
    bounds every publish, including waiting for a lost connection to come back.
    ``delivery_limit`` caps deliveries of one job (poison jobs); ``user_event_backlog``
    bounds each user-event subscriber's queue. ``publishers`` is the number of threads
    (each with its connection) sending confirmed messages concurrently.
    """

    log = logging.getLogger(f"{__name__}.RabbitBus")

    def __init__(self, url: str, *, prefix: str = "studio", publish_timeout: float = 10.0, heartbeat: int = 30,
                 delivery_limit: int = 10, user_event_backlog: int = 10_000,
                 max_reconnect_delay: float = 5.0, publishers: int = 4) -> None:
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(f"Bus prefix {prefix!r} must be 1–100 characters of A-Z a-z 0-9 _ . : -")
        if publish_timeout <= 0 or max_reconnect_delay <= 0 or heartbeat < 1:
            raise ConfigError("publish_timeout and max_reconnect_delay must be > 0 and heartbeat ≥ 1 s")
        if delivery_limit < 1 or user_event_backlog < 1 or publishers < 1:
            raise ConfigError("delivery_limit, user_event_backlog and publishers must be at least 1")
        try:
            params = pika.URLParameters(url)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"The RabbitMQ URL is invalid ({exc}); expected amqp://user:password@host:5672/vhost") from None
        self._url = url
        vhost = "" if params.virtual_host == "/" else f" vhost {params.virtual_host}"
        #: Where the broker is, without credentials (for messages and logs).
        self.where = f"{params.host}:{params.port}{vhost}"
        self.prefix = prefix
        self.publish_timeout = publish_timeout
        self.heartbeat = heartbeat
        self.delivery_limit = delivery_limit
        self.user_event_backlog = user_event_backlog
        self.max_reconnect_delay = max_reconnect_delay
        self.lifecycle_queue = f"{prefix}.{LIFECYCLE}"
        self.dead_letter_queue = f"{prefix}.dead-letters"
        self.user_exchange = f"{prefix}.user-events"
        self._lock = threading.Lock()
        self._closed = False
        self._consumers: list[_Consumer] = []
        self._queues: set[str] = set()
        self._exchanges: set[str] = set()
        self._publisher = _PublisherPool(self, size=publishers, confirm=True, name="publisher")
        self._events = _PublisherPool(self, size=1, confirm=False, name="event-publisher")

    # -- topology -----------------------------------------------------------------------
    def connect(self, role: str) -> BlockingConnection:
        """A new connection with heartbeats, named after its role for `rabbitmqctl list_connections`."""
        params = pika.URLParameters(self._url)
        params.heartbeat = self.heartbeat
        params.blocked_connection_timeout = 60  # a broker alarm must not hang publishers forever
        params.client_properties = {"connection_name": f"{self.prefix} {role}"}
        return BlockingConnection(params)

    @property
    def topology(self) -> Topology:
        with self._lock:
            return Topology(frozenset(self._queues), frozenset(self._exchanges))

    def _job_queue(self, node_id: str) -> tuple[str, Callable[[BlockingChannel], object]]:
        name = f"{self.prefix}.jobs.{node_id}"
        if not node_id or len(name.encode()) > 255:  # AMQP's limit for a queue name
            raise ConfigError(f"Node id {node_id!r} must be non-empty and make a queue name of at most 255 bytes")
        # Quorum: replicated and durable. The delivery limit counts every return to the
        # queue (reject with requeue, or the consumer's channel closing): after it the
        # message is dropped, so a job that crashes its agent does not loop forever.
        args = {"x-queue-type": "quorum", "x-delivery-limit": self.delivery_limit}
        return name, self._durable_queue(name, args)

    def _lifecycle_queue(self) -> tuple[str, Callable[[BlockingChannel], object]]:
        # One active consumer among all studio replicas keeps a job's events in order. No
        # explicit delivery limit: an event must not be lost to a burst of handler errors
        # (RabbitMQ 4.x applies its default of 20 to quorum queues anyway).
        args = {"x-queue-type": "quorum", "x-single-active-consumer": True}
        return self.lifecycle_queue, self._durable_queue(self.lifecycle_queue, args)

    def _dead_letter_queue(self) -> tuple[str, Callable[[BlockingChannel], object]]:
        # A classic queue, not a quorum one: listing dead letters takes them and gives
        # them back, and a classic queue returns them to their places uncounted, where
        # a quorum queue would count every listing as a delivery (RabbitMQ 4.x drops a
        # message after 20) — an operator looking twenty times would lose them.
        args = {"x-queue-type": "classic"}
        return self.dead_letter_queue, self._durable_queue(self.dead_letter_queue, args)

    def _queue_of(self, logical: str) -> tuple[str, Callable[[BlockingChannel], object]] | None:
        """The real queue behind a dead letter's ``queue`` ("lifecycle", "jobs.<node>")."""
        if logical == LIFECYCLE:
            return self._lifecycle_queue()
        if logical.startswith("jobs.") and len(logical) > len("jobs."):
            return self._job_queue(logical.removeprefix("jobs."))
        return None

    def _durable_queue(self, name: str, args: dict[str, Any]) -> Callable[[BlockingChannel], object]:
        with self._lock:
            self._queues.add(name)
        return lambda channel: channel.queue_declare(name, durable=True, arguments=args)

    def declare_user_exchange(self, channel: BlockingChannel) -> None:
        with self._lock:
            self._exchanges.add(self.user_exchange)
        channel.exchange_declare(self.user_exchange, exchange_type="topic", durable=True)

    # -- publishing -------------------------------------------------------------------
    def _publish(self, label: str, exchange: str, routing_key: str, body: bytes, *, persistent: bool,
                 target: str, declare: Callable[[BlockingChannel], object]) -> None:
        properties = BasicProperties(content_type="application/json",
                                     delivery_mode=2 if persistent else 1)
        # Jobs and lifecycle events must not vanish when their queue is missing; a user
        # event with no subscriber is simply nobody's business.
        mandatory = persistent

        def send(channel: BlockingChannel) -> None:
            publisher: _Publisher = _current.publisher
            publisher.ensure(channel, target, declare)
            try:
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)
            except pika.exceptions.UnroutableError:
                # Someone deleted the queue since we declared it: declare again, retry once.
                self.log.warning("queue %s vanished; declaring it again", target)
                publisher.forget(target)
                publisher.ensure(channel, target, declare)
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=mandatory)

        if persistent:
            self._publisher.call(label, send, self.publish_timeout)
        else:
            # User events: no confirm and no waiting (lossy by design, see the module doc).
            self._events.send(label, send, self.publish_timeout)

    def publish_job(self, node_id: str, message: Message) -> None:
        name, declare = self._job_queue(node_id)
        self._publish(f"a job for queue {name}", "", name, json.dumps(message).encode(),
                      persistent=True, target=name, declare=declare)

    def publish_lifecycle(self, message: Message) -> None:
        name, declare = self._lifecycle_queue()
        self._publish(f"an event for queue {name}", "", name, json.dumps(message).encode(),
                      persistent=True, target=name, declare=declare)

    def publish_user_event(self, user_id: int, event: Message) -> None:
        body = json.dumps({**event, "user_id": user_id}).encode()
        self._publish(f"a user event for exchange {self.user_exchange}", self.user_exchange,
                      f"user.{user_id}", body, persistent=False, target=self.user_exchange,
                      declare=self.declare_user_exchange)

    def job_queue_depth(self, node_id: str) -> int:
        name, _ = self._job_queue(node_id)

        def depth(channel: BlockingChannel) -> int:
            try:
                return int(channel.queue_declare(name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return 0  # never declared: nothing waits (the publisher reopens its channel)
                raise

        return self._publisher.call(f"a depth query for queue {name}", depth, self.publish_timeout)

    # -- dead letters -------------------------------------------------------------------
    def publish_dead_letter(self, letter: DeadLetter) -> None:
        """Put ``letter`` in the dead-letter queue; returns once the broker confirmed it."""
        name, declare = self._dead_letter_queue()
        self._publish(f"a dead letter for queue {name}", "", name, json.dumps(letter.to_json()).encode(),
                      persistent=True, target=name, declare=declare)

    def _walk_dead_letters(self, label: str, visit: Callable[[BlockingChannel, DeadLetter], bool], limit: int | None) -> list[str]:
        """Take dead letters one by one (``basic_get``, unacked) on a publisher thread;
        ``visit`` returns True to consume one (acked), False to leave it. Whatever was
        left goes back to its place when the walk ends (nack with requeue)."""
        name, declare = self._dead_letter_queue()

        def walk(channel: BlockingChannel) -> list[str]:
            _current.publisher.ensure(channel, name, declare)
            done: list[str] = []
            kept: int | None = None
            seen = 0
            try:
                while limit is None or seen < limit:
                    method, _props, body = channel.basic_get(name, auto_ack=False)
                    if method is None:
                        break
                    seen += 1
                    try:
                        letter = DeadLetter.from_json(json.loads(body))
                    except (ValueError, KeyError, TypeError) as exc:  # not ours: never touched
                        self.log.error("queue %s holds a message that is not a dead letter (%s); left alone", name, exc)
                        kept = method.delivery_tag
                        continue
                    if visit(channel, letter):
                        channel.basic_ack(method.delivery_tag)
                        done.append(letter.id)
                    else:
                        kept = method.delivery_tag
            finally:
                if kept is not None and channel.is_open:
                    # Every letter still unacked on this channel goes back where it was.
                    channel.basic_nack(kept, multiple=True, requeue=True)
            return done

        return self._publisher.call(label, walk, self.publish_timeout)

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []

        def look(channel: BlockingChannel, letter: DeadLetter) -> bool:
            found.append(letter)
            return False

        self._walk_dead_letters(f"a listing of queue {self.dead_letter_queue}", look, limit)
        return found

    def replay_dead_letters(self, ids: Collection[str] | None = None) -> list[str]:
        wanted = None if ids is None else set(ids)

        def replay(channel: BlockingChannel, letter: DeadLetter) -> bool:
            if wanted is not None and letter.id not in wanted:
                return False
            queue = self._queue_of(letter.queue)
            if queue is None:
                self.log.error("dead letter %s names an unknown queue %r; left alone (discard it)", letter.id, letter.queue)
                return False
            target, declare = queue
            _current.publisher.ensure(channel, target, declare)
            # Confirmed (this channel is in confirm mode) before the dead letter is acked.
            channel.basic_publish("", target, json.dumps(letter.body).encode(),
                                  BasicProperties(content_type="application/json", delivery_mode=2), mandatory=True)
            self.log.info("dead letter %s replayed to %s", letter.id, target)
            return True

        return self._walk_dead_letters(f"a replay from queue {self.dead_letter_queue}", replay, None)

    def discard_dead_letters(self, ids: Collection[str]) -> list[str]:
        wanted = set(ids)

        def discard(channel: BlockingChannel, letter: DeadLetter) -> bool:
            if letter.id in wanted:
                self.log.warning("dead letter %s from %s discarded: %s", letter.id, letter.queue, letter.reason)
                return True
            return False

        return self._walk_dead_letters(f"a discard from queue {self.dead_letter_queue}", discard, None)

    # -- consuming --------------------------------------------------------------------
    def consume_jobs(self, node_id: str, handler: JobHandler, *, prefetch: int = 1) -> Subscription:
        name, declare = self._job_queue(node_id)
        return self._start(_JobConsumer(self, name, declare, handler, max(1, prefetch)))

    def consume_lifecycle(self, handler: JobHandler, *, prefetch: int = 1) -> Subscription:
        # Prefetch 1 by default: with a requeue the next event must not already be in the
        # handler. A larger one is for a handler that never requeues (see Bus).
        name, declare = self._lifecycle_queue()
        return self._start(_JobConsumer(self, name, declare, handler, max(1, prefetch)))

    def subscribe_user_events(self, handler: EventHandler) -> Subscription:
        return self._start(_EventConsumer(self, handler))

    def _start(self, consumer: _Consumer) -> _Consumer:
        with self._lock:
            if self._closed:
                raise BusError("The RabbitMQ bus is closed; create a new bus to consume again.")
            self._consumers.append(consumer)
        consumer.start(self.publish_timeout)
        return consumer

    def _forget(self, consumer: _Consumer) -> None:
        with self._lock:
            if consumer in self._consumers:
                self._consumers.remove(consumer)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.close()
        self._events.stop()
        self._publisher.stop()
