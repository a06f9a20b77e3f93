"""Per-node queue sizing: a node holds one running job plus as many queued in its ComfyUI
as the measured control-plane lag and its short jobs ask for, never more than its agent
offers, and one queued until there is anything measured."""

from __future__ import annotations

from backend.jobs.dispatcher import Dispatcher
from backend.jobs.sizing import QueueSizing
from backend.ports.registry import NodeState
from backend.runtime import Backend

from .helpers import make_user
from .nodes import library_capabilities, register
from .test_dispatch import NodeQueue, backend, library, txt2img  # noqa: F401 - fixtures


def _sizing(lag: float, runs: list[float], node: str = "n1") -> QueueSizing:
    now = [0.0]
    sizing = QueueSizing(clock=lambda: now[0])
    for i in range(20):
        sizing.dispatched(f"j{i}-1")
        now[0] += lag
        sizing.submitted(f"j{i}-1")
    for seconds in runs:
        sizing.ran(node, seconds)
    return sizing


def test_one_queued_until_measured_and_never_more_than_the_agent_offers() -> None:
    assert QueueSizing().slots(NodeState("n1", True, slots=5)) == 2
    assert QueueSizing().slots(NodeState("n1", True, slots=1)) == 1
    assert _sizing(5.0, [0.1] * 10).slots(NodeState("n1", True, slots=4)) == 4
    assert _sizing(5.0, [0.1] * 10).slots(NodeState("n1", True, slots=1)) == 1


def test_queued_jobs_cover_the_lag_with_the_nodes_short_jobs() -> None:
    state = NodeState("n1", True, slots=8)
    assert _sizing(0.1, [1.0] * 10).slots(state) == 2  # short lag: one queued is enough
    assert _sizing(0.5, [0.25] * 10 + [6.0] * 10).slots(state) == 3  # two short jobs cover 0.5 s
    assert _sizing(0.5, [0.25] * 10).slots(NodeState("other", True, slots=8)) == 2  # its own jobs, not n1's
    # A submitted event without a known dispatch (another process dispatched it) is no sample.
    sizing = QueueSizing()
    sizing.submitted("unknown-1")
    sizing.ran("n1", 0.1)
    assert sizing.slots(state) == 2


def test_the_dispatcher_fills_as_many_slots_as_the_sizing_asks(backend: Backend) -> None:  # noqa: F811
    user = make_user(backend.db, "ida", credits=10_000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=6)
    node = NodeQueue(backend, "n1")
    for _ in range(6):
        txt2img(backend, user.id, queue_if_busy=True)
    dispatcher = Dispatcher(backend)
    assert dispatcher.dispatch_once() == 2  # nothing measured yet: one running, one queued
    dispatcher.sizing = _sizing(0.5, [0.25] * 10)
    assert dispatcher.dispatch_once() == 1  # lag 0.5 s over 0.25 s jobs: two queued
    assert len(node.drain()) == 3 and len(backend.registry.reservations("n1")) == 3
