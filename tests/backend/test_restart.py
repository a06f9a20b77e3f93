"""A dispatcher never books a slot that a job already on the node holds, even when the
registry forgot it: after a restart (a new in-process registry) and after the registry
lost its data (Redis restarted empty), the reservations are restored from the database
before the first booking."""

from __future__ import annotations

from backend import jobs
from backend.dispatcher import Dispatcher
from backend.runtime import Backend
from backend.sweeper import Sweeper

from .helpers import make_user
from .nodes import library_capabilities, register
from .test_dispatch import backend, library, txt2img  # noqa: F401 - fixtures


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
