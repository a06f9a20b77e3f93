"""After a restart: a dispatcher never books a slot that a job already on the node holds,
even when the registry forgot it (a new in-process registry, Redis restarted empty): the
reservations are restored from the database before the first booking. And a job whose
events were lost (with an in-process bus) is sent to its agent again for adoption."""

from __future__ import annotations

from backend import jobs
from backend.jobs import messages
from backend.jobs.dispatcher import Dispatcher
from backend.jobs.lifecycle import LifecycleConsumer
from backend.ports.registry import NodeState
from backend.runtime import Backend
from backend.jobs.sweeper import SweepPolicy, Sweeper

from .helpers import make_user
from .nodes import library_capabilities, register
from .test_dispatch import NodeQueue, backend, library, txt2img  # noqa: F401 - fixtures


def _fill_the_node(backend: Backend) -> list[str]:  # noqa: F811
    user = make_user(backend.db, "rex", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)
    placed = [txt2img(backend, user.id).job.id for _ in range(2)]  # type: ignore[union-attr]
    assert Dispatcher(backend).dispatch_once() == 2
    for _ in range(2):
        txt2img(backend, user.id, queue_if_busy=True)  # waiting in the backlog
    return placed


def test_after_the_registry_lost_its_data_the_slots_are_restored_before_booking(backend: Backend) -> None:  # noqa: F811
    placed = _fill_the_node(backend)
    dispatcher = Dispatcher(backend, restore=Sweeper(backend).restore_reservations)
    assert dispatcher.dispatch_once() == 0  # its first pass: the node is full
    backend.registry.clear()  # like Redis restarted without its data
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)  # the agent is back
    assert dispatcher.dispatch_once() == 0  # the two jobs on the node hold their slots again
    assert set(backend.registry.reservations("n1")) == {f"{job_id}-1" for job_id in placed}
    assert sorted(j.state for j in map(lambda i: jobs.get(backend.db, i), placed)) == ["dispatched", "dispatched"]


def test_without_the_restore_a_forgetful_registry_is_booked_twice(backend: Backend) -> None:  # noqa: F811
    """The failure the restore prevents (so the test above can fail)."""
    _fill_the_node(backend)
    backend.registry.clear()
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)
    assert Dispatcher(backend).dispatch_once() == 2


def test_a_running_job_its_agent_does_not_follow_is_sent_again_for_adoption_only(backend: Backend) -> None:  # noqa: F811
    user = make_user(backend.db, "ada", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)
    node = NodeQueue(backend, "n1")
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    ticket = node.take()["prompt_id"]
    for kind in ("submitted", "started"):
        LifecycleConsumer(backend).apply(messages.lifecycle(kind, job_id=job.id, attempt=1, node_id="n1"))

    def agent_follows(*tickets: str) -> None:
        backend.registry.heartbeat(NodeState(node_id="n1", online=True, slots=2, following=tickets), ttl=60)

    now = [0.0]
    sweeper = Sweeper(backend, clock=lambda: now[0])
    agent_follows(ticket)
    now[0] += SweepPolicy().adopt_after * 2
    sweeper.sweep_once()
    assert node.drain() == []  # followed: nothing to do

    agent_follows()  # e.g. a restarted embedded studio: its events were lost with its bus
    sweeper.sweep_once()
    now[0] += SweepPolicy().adopt_after - 1
    sweeper.sweep_once()
    assert node.drain() == []  # not yet: its state may lag a heartbeat behind
    now[0] += 1
    sweeper.sweep_once()
    [again] = node.drain()
    assert (again["prompt_id"], again["adopt_only"], again["started"]) == (ticket, True, True)
    assert jobs.get(backend.db, job.id).state == "running"  # the agent settles it, not the sweeper
