"""The message-bus contract: what the studio and the agents rely on, on every bus.

Each test runs against the in-process bus and RabbitMQ (see ``conftest.py``). Deliveries
reach the test thread through queues with timeouts; a short quiet period is only used to
show that something does *not* arrive.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from backend.errors import BusError
from backend.ports.bus import Bus, Delivery
from backend.ports.rabbitmq import RabbitBus

from .. import private_servers, services
from ..private_servers import PrivateRabbit

#: How long to wait for something that should arrive.
TIMEOUT = 10.0
#: How long to watch for something that should not arrive.
QUIET = 0.3


class Collector:
    """A handler that hands deliveries (or events) to the test thread, optionally acking."""

    def __init__(self, *, ack: bool = False) -> None:
        self.items: queue.Queue[Any] = queue.Queue()
        self.ack = ack

    def __call__(self, item: Any) -> None:
        if self.ack:
            item.ack()
        self.items.put(item)

    def get(self, timeout: float = TIMEOUT) -> Any:
        try:
            return self.items.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"nothing arrived within {timeout} s")

    def nothing(self) -> None:
        with pytest.raises(queue.Empty):
            self.items.get(timeout=QUIET)


def bodies(collector: Collector, n: int) -> list[dict[str, Any]]:
    return [collector.get().body for _ in range(n)]


# -- jobs -----------------------------------------------------------------------------
def test_a_published_job_is_consumed(bus: Bus) -> None:
    got = Collector()
    bus.publish_job("n1", {"job_id": "j1", "params": {"seed": 7}})
    bus.consume_jobs("n1", got)
    delivery = got.get()
    assert delivery.body == {"job_id": "j1", "params": {"seed": 7}}
    assert delivery.redelivered is False
    delivery.ack()


def test_jobs_arrive_in_publish_order(bus: Bus) -> None:
    for i in range(20):
        bus.publish_job("n1", {"i": i})
    got = Collector(ack=True)
    bus.consume_jobs("n1", got)
    assert bodies(got, 20) == [{"i": i} for i in range(20)]


def test_prefetch_bounds_unsettled_deliveries(bus: Bus) -> None:
    for i in range(5):
        bus.publish_job("n1", {"i": i})
    got = Collector()
    bus.consume_jobs("n1", got, prefetch=2)
    first, second = got.get(), got.get()
    got.nothing()  # two unsettled: the third waits
    first.ack()
    third = got.get()
    got.nothing()
    assert [d.body["i"] for d in (first, second, third)] == [0, 1, 2]
    second.ack()
    third.ack()
    assert [d.body["i"] for d in (got.get(), got.get())] == [3, 4]


def test_an_acked_job_does_not_come_back(bus: Bus) -> None:
    bus.publish_job("n1", {"job_id": "a"})
    got = Collector(ack=True)
    sub = bus.consume_jobs("n1", got)
    assert got.get().body == {"job_id": "a"}
    sub.close()
    bus.publish_job("n1", {"job_id": "b"})
    later = Collector(ack=True)
    bus.consume_jobs("n1", later)
    assert later.get().body == {"job_id": "b"}  # not "a" again
    later.nothing()


def test_reject_with_requeue_redelivers(bus: Bus) -> None:
    bus.publish_job("n1", {"job_id": "a"})
    got = Collector()
    bus.consume_jobs("n1", got)
    got.get().reject(requeue=True)
    again = got.get()
    assert again.body == {"job_id": "a"}
    assert again.redelivered is True
    again.ack()
    got.nothing()


def test_reject_without_requeue_drops(bus: Bus) -> None:
    bus.publish_job("n1", {"job_id": "a"})
    bus.publish_job("n1", {"job_id": "b"})
    got = Collector()
    bus.consume_jobs("n1", got)
    got.get().reject(requeue=False)
    b = got.get()
    assert b.body == {"job_id": "b"}
    b.ack()
    got.nothing()
    assert bus.job_queue_depth("n1") == 0


def test_closing_a_subscription_requeues_its_unsettled_delivery(bus: Bus) -> None:
    bus.publish_job("n1", {"job_id": "a"})
    first = Collector()
    sub = bus.consume_jobs("n1", first)
    held = first.get()
    sub.close()
    held.ack()  # too late: the delivery went back with the subscription; a no-op
    second = Collector()
    bus.consume_jobs("n1", second)
    again = second.get()
    assert again.body == {"job_id": "a"}
    assert again.redelivered is True
    again.ack()
    first.nothing()


def test_node_queues_are_isolated(bus: Bus) -> None:
    got = Collector(ack=True)
    bus.consume_jobs("n1", got)
    bus.publish_job("n2", {"for": "n2"})
    bus.publish_job("n1", {"for": "n1"})
    assert got.get().body == {"for": "n1"}
    got.nothing()
    assert bus.job_queue_depth("n2") == 1
    assert bus.job_queue_depth("n1") == 0


def test_job_queue_depth_counts_waiting_jobs(bus: Bus) -> None:
    assert bus.job_queue_depth("never-used") == 0
    for i in range(3):
        bus.publish_job("n1", {"i": i})
    assert bus.job_queue_depth("n1") == 3
    got = Collector()
    bus.consume_jobs("n1", got)
    held = got.get()
    assert bus.job_queue_depth("n1") == 2  # the unsettled one is not waiting
    held.ack()


def test_a_handler_that_raises_gets_the_message_requeued(bus: Bus) -> None:
    got = Collector()
    calls: list[bool] = []

    def flaky(delivery: Delivery) -> None:
        calls.append(delivery.redelivered)
        if len(calls) == 1:
            raise RuntimeError("boom (expected by the test)")
        got(delivery)

    bus.publish_job("n1", {"job_id": "a"})
    bus.consume_jobs("n1", flaky)
    again = got.get()
    assert again.body == {"job_id": "a"}
    assert again.redelivered is True
    again.ack()
    assert calls == [False, True]


def test_settling_twice_is_harmless(bus: Bus) -> None:
    bus.publish_job("n1", {"job_id": "a"})
    bus.publish_job("n1", {"job_id": "b"})
    got = Collector()
    bus.consume_jobs("n1", got)
    a = got.get()
    a.ack()
    a.ack()
    a.reject(requeue=True)
    b = got.get()  # the consumer still works (RabbitMQ: the channel was not closed)
    assert b.body == {"job_id": "b"}
    b.reject(requeue=True)
    b.ack()  # ignored: b was already given back
    again = got.get()
    assert again.body == {"job_id": "b"}
    again.ack()
    got.nothing()
    assert bus.job_queue_depth("n1") == 0


def test_job_bodies_are_copies(bus: Bus) -> None:
    message = {"job_id": "a", "params": {"seed": 1}}
    bus.publish_job("n1", message)
    message["params"]["seed"] = 2  # after publishing: must not matter
    got = Collector()
    bus.consume_jobs("n1", got)
    first = got.get()
    assert first.body["params"]["seed"] == 1
    first.body["params"]["seed"] = 3
    first.reject(requeue=True)
    assert got.get().body["params"]["seed"] == 1


# -- lifecycle ------------------------------------------------------------------------
def test_lifecycle_events_are_applied_in_order_by_one_consumer(bus: Bus) -> None:
    seen: queue.Queue[tuple[str, int]] = queue.Queue()

    def consumer(name: str) -> Any:
        def handle(delivery: Delivery) -> None:
            seen.put((name, delivery.body["seq"]))
            delivery.ack()
        return handle

    subs = {name: bus.consume_lifecycle(consumer(name)) for name in ("a", "b")}
    for seq in range(20):
        bus.publish_lifecycle({"job_id": "j1", "seq": seq})
    events = [seen.get(timeout=TIMEOUT) for _ in range(20)]
    assert [seq for _, seq in events] == list(range(20))
    active = {name for name, _ in events}
    assert len(active) == 1

    subs[active.pop()].close()  # the other takes over
    for seq in range(20, 25):
        bus.publish_lifecycle({"job_id": "j1", "seq": seq})
    events = [seen.get(timeout=TIMEOUT) for _ in range(5)]
    assert [seq for _, seq in events] == list(range(20, 25))
    assert len({name for name, _ in events}) == 1


# -- dead letters ---------------------------------------------------------------------
def test_a_dead_lettered_event_is_set_aside_with_its_reason(bus: Bus) -> None:
    got = Collector()
    bus.consume_lifecycle(got)
    bus.publish_lifecycle({"job_id": "j1", "type": "output"})
    bus.publish_lifecycle({"job_id": "j2", "type": "succeeded"})
    first = got.get()
    first.dead_letter("NotFound: no stored file for asset ab12")
    second = got.get()  # the queue moves on
    assert second.body == {"job_id": "j2", "type": "succeeded"}
    second.ack()
    got.nothing()  # not redelivered
    letters = bus.dead_letters()
    assert [(d.body, d.reason, d.queue) for d in letters] == [
        ({"job_id": "j1", "type": "output"}, "NotFound: no stored file for asset ab12", "lifecycle")]
    assert letters[0].failed_at > 0 and letters[0].id
    assert bus.dead_letters() == letters  # listing takes nothing away
    assert bus.dead_letters(limit=0) == []


def test_replay_puts_chosen_dead_letters_back_on_their_queue_in_order(bus: Bus) -> None:
    got = Collector()
    bus.consume_lifecycle(got)
    for name in "abcd":
        bus.publish_lifecycle({"job_id": name})
        got.get().dead_letter(f"bad {name}")
    letters = {d.body["job_id"]: d.id for d in bus.dead_letters()}
    assert list(letters) == ["a", "b", "c", "d"]
    assert bus.replay_dead_letters([letters["c"], letters["a"], "no-such-id"]) == [letters["a"], letters["c"]]
    replayed = []
    for _ in range(2):  # prefetch 1: each is acked before the next comes
        replayed.append(got.get())
        replayed[-1].ack()
    assert [d.body for d in replayed] == [{"job_id": "a"}, {"job_id": "c"}]
    got.nothing()
    assert [d.body["job_id"] for d in bus.dead_letters()] == ["b", "d"]  # the rest kept their order
    assert bus.replay_dead_letters() == [letters["b"], letters["d"]]
    again = []
    for _ in range(2):
        again.append(got.get())
        again[-1].ack()
    assert [d.body for d in again] == [{"job_id": "b"}, {"job_id": "d"}]
    assert bus.dead_letters() == []


def test_a_job_dead_letter_goes_back_to_its_node_queue(bus: Bus) -> None:
    got = Collector()
    sub = bus.consume_jobs("n1", got)
    bus.publish_job("n1", {"job_id": "j1"})
    got.get().dead_letter("cannot run here")
    sub.close()
    [letter] = bus.dead_letters()
    assert letter.queue == "jobs.n1"
    assert bus.job_queue_depth("n1") == 0
    bus.replay_dead_letters([letter.id])
    assert bus.job_queue_depth("n1") == 1


def test_discarded_dead_letters_are_gone(bus: Bus) -> None:
    got = Collector()
    bus.consume_lifecycle(got)
    for name in "ab":
        bus.publish_lifecycle({"job_id": name})
        got.get().dead_letter("bad")
    a, b = bus.dead_letters()
    assert bus.discard_dead_letters([a.id, "no-such-id"]) == [a.id]
    assert bus.dead_letters() == [b]
    assert bus.replay_dead_letters([a.id]) == []
    got.nothing()


def test_a_settled_delivery_is_not_dead_lettered(bus: Bus) -> None:
    got = Collector()
    bus.consume_lifecycle(got)
    bus.publish_lifecycle({"job_id": "a"})
    delivery = got.get()
    delivery.ack()
    delivery.dead_letter("too late")
    assert bus.dead_letters() == []


# -- user events ----------------------------------------------------------------------
def test_user_events_reach_every_subscriber_with_the_user_id(bus: Bus) -> None:
    one, two = Collector(), Collector()
    bus.subscribe_user_events(one)
    bus.subscribe_user_events(two)
    bus.publish_user_event(7, {"type": "progress", "job_id": "j1", "value": 3})
    bus.publish_user_event(8, {"type": "queued", "job_id": "j2"})
    for got in (one, two):
        assert got.get() == {"type": "progress", "job_id": "j1", "value": 3, "user_id": 7}
        assert got.get() == {"type": "queued", "job_id": "j2", "user_id": 8}


def test_user_events_are_not_kept_for_later_subscribers(bus: Bus) -> None:
    early = Collector()
    bus.subscribe_user_events(early)
    bus.publish_user_event(1, {"type": "queued", "job_id": "old"})
    assert early.get()["job_id"] == "old"
    late = Collector()
    bus.subscribe_user_events(late)
    bus.publish_user_event(1, {"type": "queued", "job_id": "new"})
    assert late.get()["job_id"] == "new"
    assert early.get()["job_id"] == "new"
    late.nothing()


def test_user_events_are_copies_per_subscriber(bus: Bus) -> None:
    mutated = threading.Event()
    seen: queue.Queue[dict[str, Any]] = queue.Queue()

    def vandal(event: dict[str, Any]) -> None:
        event["stage"]["alias"] = "changed"
        mutated.set()

    def witness(event: dict[str, Any]) -> None:
        mutated.wait(TIMEOUT)  # look only after the other subscriber changed its copy
        seen.put(copy.deepcopy(event))

    bus.subscribe_user_events(vandal)
    bus.subscribe_user_events(witness)
    bus.publish_user_event(1, {"type": "stage", "stage": {"alias": "Pose analysis"}})
    assert seen.get(timeout=TIMEOUT)["stage"] == {"alias": "Pose analysis"}


# -- closing --------------------------------------------------------------------------
def test_a_closed_bus_refuses_to_publish(bus: Bus) -> None:
    bus.close()
    with pytest.raises(BusError):
        bus.publish_job("n1", {"job_id": "a"})
    with pytest.raises(BusError):
        bus.publish_lifecycle({"job_id": "a"})
    with pytest.raises(BusError):
        bus.publish_user_event(1, {"type": "queued"})
    with pytest.raises(BusError):
        bus.consume_jobs("n1", Collector())
    bus.close()  # closing twice is harmless


# -- RabbitMQ only --------------------------------------------------------------------
def test_an_unreachable_broker_is_a_bus_error_naming_it() -> None:
    bus = RabbitBus("amqp://guest:guest@127.0.0.1:1/%2F", publish_timeout=0.5)
    try:
        with pytest.raises(BusError, match="127.0.0.1:1"):
            bus.publish_job("n1", {"job_id": "a"})
        with pytest.raises(BusError, match="127.0.0.1:1"):
            bus.consume_jobs("n1", Collector())
    finally:
        bus.close()


@pytest.fixture(scope="module")
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this module alone: the restart test stops it, which the shared
    broker (other test runs use it) must never be."""
    private_servers.require("rabbitmq")
    with private_servers.private_servers("rabbitmq") as servers:
        assert servers.rabbitmq is not None
        yield servers.rabbitmq


def test_rabbitmq_restart_reconnects_and_redelivers(private_rabbit: PrivateRabbit) -> None:
    rabbit = RabbitBus(private_rabbit.url, prefix="restart", publish_timeout=10, max_reconnect_delay=0.5)
    got = Collector()
    rabbit.consume_jobs("n1", got)
    rabbit.publish_job("n1", {"job_id": "a"})
    stale = got.get()
    try:
        private_rabbit.stop_app()
    finally:
        private_rabbit.start_app()

    again = got.get(timeout=60)
    assert again.body == {"job_id": "a"}
    assert again.redelivered is True
    stale.ack()  # must not ack `again` (same tag number on the new channel) nor break the channel
    again.reject(requeue=True)
    third = got.get()  # so `again` was still unsettled: the stale ack did nothing
    assert third.body == {"job_id": "a"}
    third.ack()
    rabbit.publish_job("n1", {"job_id": "b"})  # the publisher reconnects by itself
    b = got.get()
    assert b.body == {"job_id": "b"}
    b.ack()
    got.nothing()
    rabbit.close()


def test_dead_letters_outlive_the_bus_that_set_them_aside() -> None:
    with services.rabbit_bus() as first:
        got = Collector()
        first.consume_lifecycle(got)
        first.publish_lifecycle({"job_id": "a"})
        got.get().dead_letter("bad")
        later = RabbitBus(services.AMQP_URL, prefix=first.prefix, publish_timeout=10)
        try:
            assert [d.body for d in later.dead_letters()] == [{"job_id": "a"}]
        finally:
            later.close()


def test_an_unreadable_message_is_dead_lettered_not_dropped(rabbit: RabbitBus) -> None:
    got = Collector(ack=True)
    rabbit.consume_lifecycle(got)
    rabbit.publish_lifecycle({"job_id": "first"})
    assert got.get().body == {"job_id": "first"}  # the queue exists now
    conn = pika.BlockingConnection(pika.URLParameters(services.AMQP_URL))
    try:
        conn.channel().basic_publish("", rabbit.lifecycle_queue, b"\xff not json")
    finally:
        conn.close()
    rabbit.publish_lifecycle({"job_id": "after"})
    assert got.get().body == {"job_id": "after"}  # the queue went on
    [letter] = rabbit.dead_letters()
    assert letter.body == {"unreadable": "\ufffd not json"} and letter.reason.startswith("unreadable")


def test_a_poison_job_is_dropped_after_the_delivery_limit() -> None:
    with services.rabbit_bus(delivery_limit=2) as bus:
        got = Collector()
        bus.consume_jobs("n1", got)
        bus.publish_job("n1", {"job_id": "poison"})
        for attempt in range(3):  # the first delivery, then one per unit of the limit
            delivery = got.get()
            assert delivery.redelivered is (attempt > 0)
            delivery.reject(requeue=True)  # like an agent that crashes on this job
        got.nothing()  # dropped: not redelivered a fourth time
        assert bus.job_queue_depth("n1") == 0
