"""Per-node queue sizing: a node holds one running job plus queued ones in its ComfyUI
until their predicted work covers the measured control-plane lag, never more than its
agent offers, and one queued until the lag is measured."""

from __future__ import annotations

import threading
import time

from backend.jobs.dispatcher import Dispatcher
from backend.jobs.sizing import QueueSizing
from backend.ports.registry import NodeState, NodeView
from backend.runtime import Backend

from .helpers import make_user
from .nodes import library_capabilities, register
from .test_dispatch import NodeQueue, backend, library, txt2img  # noqa: F401 - fixtures


def _sizing(lag: float) -> QueueSizing:
    now = [0.0]
    sizing = QueueSizing(clock=lambda: now[0])
    for i in range(20):
        sizing.dispatched(f"j{i}-1")
        now[0] += lag
        sizing.submitted(f"j{i}-1")
    return sizing


def _view(*estimates: float, slots: int = 8, speed: float = 1.0) -> NodeView:
    return NodeView(NodeState("n1", True, slots=slots, speed=speed), {f"p{i}": e for i, e in enumerate(estimates)})


def test_one_queued_until_measured_and_never_more_than_the_agent_offers() -> None:
    assert QueueSizing().slots(_view(slots=5)) == 2
    assert QueueSizing().slots(_view(1.0, 1.0, slots=5)) == 2  # full until the lag is known
    assert QueueSizing().slots(_view(slots=1)) == 1
    assert _sizing(5.0).slots(_view(0.1, 0.1, 0.1, slots=4)) == 4
    assert _sizing(5.0).slots(_view(0.1, 0.1, 0.1, 0.1, slots=4)) == 4  # the agent's limit
    # A submitted event without a known dispatch (another process dispatched it) is no sample.
    sizing = QueueSizing()
    sizing.submitted("unknown-1")
    assert sizing.lag() is None


def test_a_node_takes_more_while_its_queued_work_is_shorter_than_the_lag() -> None:
    sizing = _sizing(0.5)
    assert sizing.slots(_view()) == 2 and sizing.slots(_view(6.0)) == 2  # one running + one queued, always
    assert sizing.slots(_view(6.0, 0.25)) == 3  # 0.25 s queued does not last 0.5 s: one more
    assert sizing.slots(_view(6.0, 0.25, 0.25)) == 3  # 0.5 s queued: enough
    assert sizing.slots(_view(0.25, 6.0)) == 2  # one long job queued is enough
    assert sizing.slots(_view(6.0, 0.2, slots=8, speed=3.0)) == 2  # a slow node's 0.2 s takes 0.6 s


def test_the_lag_adds_the_dispatchers_reaction_to_the_round_trip() -> None:
    sizing = _sizing(0.5)
    assert sizing.lag() == 0.5
    for seconds in [0.01] * 8 + [0.3] * 2:  # the slow end counts
        sizing.reacted(seconds)
    assert sizing.lag() == 0.8
    assert sizing.slots(_view(6.0, 0.6)) == 3  # 0.6 s queued covered the round trip, not the refill


def test_a_pass_that_places_jobs_after_a_wake_up_is_a_reaction_sample(backend: Backend) -> None:  # noqa: F811
    user = make_user(backend.db, "ida", credits=10_000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)
    node = NodeQueue(backend, "n1")
    dispatcher = Dispatcher(backend, interval=60.0, sizing=_sizing(0.5))  # no periodic pass in this test
    stop = threading.Event()
    runner = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    runner.start()
    try:
        txt2img(backend, user.id, queue_if_busy=True)
        dispatcher.wake()
        node.take()
        deadline = time.monotonic() + 10  # the sample is taken once the pass has returned
        while dispatcher.sizing.lag() == 0.5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dispatcher.sizing.lag() > 0.5  # type: ignore[operator]
    finally:
        stop.set()
        dispatcher.wake()
        runner.join(10)


def test_the_dispatcher_fills_as_many_slots_as_the_sizing_asks(backend: Backend) -> None:  # noqa: F811
    user = make_user(backend.db, "ida", credits=10_000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=6)
    node = NodeQueue(backend, "n1")
    for _ in range(6):
        txt2img(backend, user.id, queue_if_busy=True)
    dispatcher = Dispatcher(backend)
    assert dispatcher.dispatch_once() == 2  # nothing measured yet: one running, one queued
    estimate = next(iter(backend.registry.reservations("n1").values()))
    dispatcher.sizing = _sizing(1.5 * estimate)  # the queued job's work does not cover the lag
    assert dispatcher.dispatch_once() == 1
    assert dispatcher.dispatch_once() == 0  # two queued cover it
    assert len(node.drain()) == 3 and len(backend.registry.reservations("n1")) == 3
