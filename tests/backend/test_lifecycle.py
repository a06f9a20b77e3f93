"""What the lifecycle consumer does with an agent event it cannot apply: an event that fails
for its own reasons is set aside as a dead letter (never dropped) and can be replayed once
the cause is fixed; the events behind it are not held up. (An event that fails because the
database is away is retried instead: ``test_database_outage.py``.)

And the order of a job's end: the node's slot is freed (and the dispatcher woken) before the
database work of the event, and a crash between the two loses neither the slot nor the
refund, nor pays the refund twice."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time

import pytest

import dataclasses

from sqlalchemy import func, select

from backend import jobs
from backend.accounts import ledger
from backend.jobs import messages
from backend.db import Database
from backend.db.models import Job, JobOutput, LedgerEntry, utcnow
from backend.errors import DatabaseUnavailable
from backend.jobs.dispatcher import Dispatcher
from backend.jobs.lifecycle import MAX_EVENT_ATTEMPTS, LifecycleConsumer
from backend.jobs.sweeper import SweepPolicy, Sweeper
from backend.runtime import Backend

from ..e2e.stack import png_bytes, wait_for
from .helpers import make_user
from .nodes import library_capabilities, register
from .test_dispatch import WAIT, NodeQueue, _age_column, backend, event, library, started_job, txt2img  # noqa: F401 - fixtures


def _running_job(backend: Backend) -> dict:  # noqa: F811 - the fixture's name
    user = make_user(backend.db, "dee", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    node = NodeQueue(backend, "n1")
    txt2img(backend, user.id)
    Dispatcher(backend).dispatch_once()
    return node.take()


def _output(msg: dict, **fields: object) -> dict:
    return messages.lifecycle("output", job_id=msg["job_id"], attempt=msg["attempt"], node_id="n1", graph_node="9", **fields)


def _outputs(backend: Backend, job_id: str) -> int:  # noqa: F811
    with backend.db.read() as s:
        return s.scalar(select(func.count()).select_from(JobOutput).where(JobOutput.job_id == job_id)) or 0


def test_an_output_whose_file_is_missing_is_set_aside_and_replayed_once_it_is_there(backend: Backend) -> None:  # noqa: F811
    msg = _running_job(backend)
    consumer = LifecycleConsumer(backend)
    consumer.start()
    try:
        image = png_bytes(32, 32)
        sha = hashlib.sha256(image).hexdigest()
        output = _output(msg, position=0, asset_id=sha, size=len(image), kind="image", format="PNG")
        for kind in ("submitted", "started"):
            backend.bus.publish_lifecycle(event(msg, "n1", kind))
        backend.bus.publish_lifecycle(output)  # the agent said it stored the file; the store has no such file
        backend.bus.publish_lifecycle(event(msg, "n1", "succeeded", seconds=1.0))
        wait_for(lambda: jobs.get(backend.db, msg["job_id"]).state == "succeeded", 10, "the events behind it applied")
        [letter] = backend.bus.dead_letters()
        assert letter.body == output and letter.queue == "lifecycle"
        assert letter.reason.startswith("NotFound") and sha in letter.reason
        assert _outputs(backend, msg["job_id"]) == 0

        backend.blobs.write_bytes(image)  # the operator restores the file, then replays
        assert backend.bus.replay_dead_letters() == [letter.id]
        wait_for(lambda: _outputs(backend, msg["job_id"]) == 1, 10, "the replayed output registered")
        assert backend.bus.dead_letters() == []
        assert ledger.verify(backend.db) == []
    finally:
        consumer.stop()


def test_an_event_that_keeps_crashing_the_consumer_is_retried_then_set_aside(backend: Backend) -> None:  # noqa: F811
    msg = _running_job(backend)
    consumer = LifecycleConsumer(backend)
    consumer.start()
    try:
        image = png_bytes(16, 16)
        blob = backend.blobs.write_bytes(image)
        broken = _output(msg, position="first", asset_id=blob.sha256, size=blob.size, kind="image")
        backend.bus.publish_lifecycle(broken)  # int("first") raises in the handler: a bug-like crash
        backend.bus.publish_lifecycle(event(msg, "n1", "started"))
        wait_for(lambda: jobs.get(backend.db, msg["job_id"]).state == "running", 15, "the event behind it applied")
        [letter] = backend.bus.dead_letters()
        assert letter.body == broken
        assert letter.reason.startswith("ValueError") and f"crashed {MAX_EVENT_ATTEMPTS} times" in letter.reason
    finally:
        consumer.stop()


def test_an_output_event_of_an_agent_one_release_behind_is_registered(backend: Backend) -> None:  # noqa: F811
    """Agents upgrade after the workers: an old agent's ``output`` names the asset ``asset``."""
    msg = _running_job(backend)
    consumer = LifecycleConsumer(backend)
    consumer.start()
    try:
        blob = backend.blobs.write_bytes(png_bytes(24, 24))
        backend.bus.publish_lifecycle(event(msg, "n1", "started"))
        backend.bus.publish_lifecycle(_output(msg, position=0, asset=blob.sha256, size=blob.size, kind="image", format="PNG"))
        wait_for(lambda: _outputs(backend, msg["job_id"]) == 1, 15, "the old agent's output registered")
        with backend.db.read() as s:
            assert s.scalar(select(JobOutput.asset_id).where(JobOutput.job_id == msg["job_id"])) == blob.sha256
        assert backend.bus.dead_letters() == []
    finally:
        consumer.stop()


def _refunds(backend: Backend, job_id: str) -> int:  # noqa: F811
    with backend.db.read() as s:
        return s.scalar(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.job_id == job_id, LedgerEntry.kind == "refund")) or 0


@pytest.mark.parametrize("kind", ["succeeded", "failed"])
def test_a_finished_job_frees_its_slot_before_the_database_write(backend: Backend, kind: str) -> None:  # noqa: F811
    user_id, job = started_job(backend, "eve")
    register(backend.registry, "n1", library_capabilities(backend.library), slots=1)
    waiting = txt2img(backend, user_id, queue_if_busy=True).job  # type: ignore[union-attr]
    seen: list[tuple[str, bool]] = []

    def slot_freed() -> None:  # the dispatcher, woken: it finds the slot free and uses it
        seen.append((jobs.get(backend.db, job.id).state, backend.registry.holds("n1", f"{job.id}-1")))
        Dispatcher(backend).dispatch_once()

    LifecycleConsumer(backend, on_slot_freed=slot_freed).apply(
        event({"job_id": job.id, "attempt": 1}, "n1", kind, error_type="X", message="m"))
    assert seen == [("running", False)]  # woken with the slot free while the row still says running
    ended, next_one = jobs.get(backend.db, job.id), jobs.get(backend.db, waiting.id)
    assert ended.state == kind and (next_one.state, next_one.node_id) == ("dispatched", "n1")
    # The database's record never shows the node holding both: the end is stamped when
    # the slot was freed, before the next dispatch, not when the write committed after it.
    assert ended.finished_at is not None and next_one.dispatched_at is not None
    assert ended.finished_at <= next_one.dispatched_at


def _failed_while_the_database_is_away(backend: Backend, user_name: str) -> tuple[int, Job, dict]:  # noqa: F811
    """A started job whose ``failed`` event comes while the consumer's database is away:
    the slot is freed, the write fails. The user id, the job and the event."""
    user_id, job = started_job(backend, user_name)
    failed = event({"job_id": job.id, "attempt": 1}, "n1", "failed", error_type="OutOfMemory", message="CUDA")
    away = dataclasses.replace(backend, db=Database("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    with pytest.raises(DatabaseUnavailable):
        LifecycleConsumer(away).apply(failed)
    return user_id, job, failed


def test_a_crash_between_freeing_the_slot_and_the_write_is_healed_with_one_refund(backend: Backend) -> None:  # noqa: F811
    user_id, job, failed = _failed_while_the_database_is_away(backend, "fay")
    assert jobs.get(backend.db, job.id).state == "running" and _refunds(backend, job.id) == 0
    assert backend.registry.reservations("n1") == {}

    # A sweeper reading the job as still on its node does not take the node's slot back,
    # however often it looks (the registry remembers the node said the attempt ended).
    now = [0.0]
    sweeper = Sweeper(backend, clock=lambda: now[0])
    sweeper.sweep_once()
    sweeper.sweep_once()
    assert backend.registry.reservations("n1") == {}
    assert sweeper.restore_reservations() == 0

    # The node is lost for good before the event comes back: the sweeper settles the job
    # (NodeLost, refunded); the redelivered event, applied twice, pays nothing more.
    backend.registry.remove("n1")
    sweeper.sweep_once()
    now[0] = SweepPolicy().agent_lost_after
    sweeper.sweep_once()
    assert jobs.get(backend.db, job.id).error_type == "NodeLost"
    consumer = LifecycleConsumer(backend)
    consumer.apply(failed)
    consumer.apply(failed)
    assert _refunds(backend, job.id) == 1 and jobs.get(backend.db, job.id).error_type == "NodeLost"
    with backend.db.read() as s:
        assert ledger.balance(s, user_id) == 500
    assert ledger.verify(backend.db) == []


def test_a_redelivered_end_after_a_crash_settles_the_job_once(backend: Backend) -> None:  # noqa: F811
    user_id, job, failed = _failed_while_the_database_is_away(backend, "gus")
    Sweeper(backend).sweep_once()
    consumer = LifecycleConsumer(backend)
    for _ in range(2):  # the broker redelivers the unacked event; a duplicate follows
        consumer.apply(failed)
    assert jobs.get(backend.db, job.id).state == "failed" and _refunds(backend, job.id) == 1
    assert backend.registry.reservations("n1") == {}
    with backend.db.read() as s:
        assert ledger.balance(s, user_id) == 500
    assert ledger.verify(backend.db) == []


def test_an_end_frees_the_slot_on_arrival_while_the_database_is_away(backend: Backend,  # noqa: F811
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backend.jobs.lifecycle")
    user_id, job = started_job(backend, "hal")
    away = dataclasses.replace(backend, db=Database("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    stuck = LifecycleConsumer(away)
    stuck.start()
    msg = {"job_id": job.id, "attempt": 1}
    blob = backend.blobs.write_bytes(png_bytes(16, 16))
    try:
        # The applier is stuck on the output (its write waits for the database); the end
        # that arrives behind it still frees the slot, as it arrives.
        backend.bus.publish_lifecycle(_output(msg, position=0, asset=blob.sha256, size=blob.size, kind="image"))
        wait_for(lambda: "event output waits for" in caplog.text, 10, "the applier stuck on the output")
        backend.bus.publish_lifecycle(event(msg, "n1", "succeeded", seconds=1.0))
        wait_for(lambda: not backend.registry.holds("n1", f"{job.id}-1"), 10, "the slot freed on arrival")
        assert jobs.get(backend.db, job.id).state == "running"  # the write waits for the database
    finally:
        stuck.stop()  # like a crash: the unsettled event goes back to the queue
    consumer = LifecycleConsumer(backend)
    consumer.start()
    try:
        wait_for(lambda: jobs.get(backend.db, job.id).state == "succeeded", 10, "the events applied by the next consumer")
        assert backend.registry.reservations("n1") == {} and _refunds(backend, job.id) == 0
        assert _outputs(backend, job.id) == 1 and backend.bus.dead_letters() == []
    finally:
        consumer.stop()
    assert ledger.verify(backend.db) == []


def test_events_that_queued_up_are_applied_together_and_a_bad_one_alone_is_set_aside(backend: Backend) -> None:  # noqa: F811
    msg = _running_job(backend)
    broken = {"type": "submitted", "attempt": 1, "node_id": "n1"}  # no job_id: crashes the handler
    queued = [event(msg, "n1", "submitted"), event(msg, "n1", "started"), broken,
              event(msg, "n1", "succeeded", seconds=1.0)]
    for body in queued:  # all waiting before the consumer starts: they arrive as one run
        backend.bus.publish_lifecycle(body)
    transactions: list[list[str]] = []
    consumer = LifecycleConsumer(backend, appliers=1)  # one applier sees the job's events and the broken one in one run
    inner = consumer.apply_together

    def counted(events: list[dict]) -> None:
        transactions.append([e["type"] for e in events])
        inner(events)

    consumer.apply_together = counted  # type: ignore[method-assign]
    consumer.start()
    try:
        wait_for(lambda: jobs.get(backend.db, msg["job_id"]).state == "succeeded", 30, "the good events applied")
        wait_for(lambda: len(backend.bus.dead_letters()) == 1, 30, "the broken event set aside")
        [letter] = backend.bus.dead_letters()
        assert letter.body == broken and letter.reason.startswith("KeyError")
        assert transactions[0] == ["submitted", "started", "submitted", "succeeded"]  # tried together first
        assert not backend.registry.holds("n1", msg["prompt_id"])
    finally:
        consumer.stop()


def test_a_job_whose_event_waits_does_not_hold_up_the_events_of_other_jobs(backend: Backend) -> None:  # noqa: F811
    """Appliers share the jobs: one job's event that waits (its output's file on a slow
    store, a lock) holds up that job's later events, in order, and no other job's."""
    user = make_user(backend.db, "ida", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    node = NodeQueue(backend, "n1")
    consumer = LifecycleConsumer(backend, appliers=2)
    consumer.start()  # partitions exist once started
    try:
        by_applier: dict[int, dict] = {}
        while len(by_applier) < 2:  # two running jobs that the two appliers share between them
            txt2img(backend, user.id)
            Dispatcher(backend).dispatch_once()
            msg = node.take()
            if consumer._applier_of(msg) in by_applier:  # the same applier's: finish it, try another
                LifecycleConsumer(backend).apply(event(msg, "n1", "succeeded", seconds=1.0))
            else:
                by_applier[consumer._applier_of(msg)] = msg
        held, other = by_applier[0], by_applier[1]
        gate = threading.Event()
        applied: dict[str, list[str]] = {held["job_id"]: [], other["job_id"]: []}
        inner = consumer.apply_together

        def gated(events: list[dict]) -> None:
            if any(e["job_id"] == held["job_id"] for e in events):
                gate.wait(WAIT)
            for e in events:
                applied[e["job_id"]].append(e["type"])
            inner(events)

        consumer.apply_together = gated  # type: ignore[method-assign]
        for kind in ("submitted", "started", "succeeded"):
            backend.bus.publish_lifecycle(event(held, "n1", kind, seconds=1.0))
            backend.bus.publish_lifecycle(event(other, "n1", kind, seconds=1.0))
        wait_for(lambda: jobs.get(backend.db, other["job_id"]).state == "succeeded", WAIT, "the other job's events applied")
        assert jobs.get(backend.db, held["job_id"]).state == "dispatched" and applied[held["job_id"]] == []
        gate.set()
        wait_for(lambda: jobs.get(backend.db, held["job_id"]).state == "succeeded", WAIT, "the held job's events applied")
        assert applied == {held["job_id"]: ["submitted", "started", "succeeded"],
                           other["job_id"]: ["submitted", "started", "succeeded"]}
    finally:
        consumer.stop()
    assert ledger.verify(backend.db) == []


def _stamps(backend: Backend, job_id: str) -> tuple:  # noqa: F811
    with backend.db.read() as s:
        job = s.get(Job, job_id)
        return job.dispatched_at, job.started_at, job.finished_at


@pytest.mark.parametrize("kind", ["succeeded", "failed"])
def test_an_end_applied_long_after_the_node_finished_is_stamped_with_the_nodes_time(backend: Backend,
                                                                                   kind: str) -> None:  # noqa: F811
    """An end rebuilt from ComfyUI's history a minute late (an embedded studio killed before
    writing it lost it with its in-process bus): the record says when the node finished,
    or the node seems to hold its next jobs and that one at once."""
    _, job = started_job(backend, "ivy")
    _age_column(backend, job.id, "dispatched_at", 120)
    _age_column(backend, job.id, "started_at", 90)
    dispatched, started, _ = _stamps(backend, job.id)
    ended = started + dt.timedelta(seconds=20)
    LifecycleConsumer(backend).apply(event({"job_id": job.id, "attempt": 1}, "n1", kind, seconds=20.0, error_type="X",
                                           message="m", ended_at=ended.timestamp()))
    assert jobs.get(backend.db, job.id).state == kind
    assert abs((_stamps(backend, job.id)[2] - ended).total_seconds()) < 0.01


def test_a_nodes_time_before_the_jobs_start_or_after_its_arrival_is_not_believed(backend: Backend) -> None:  # noqa: F811
    """The node's clock is another machine's: behind, the end would precede the start;
    ahead, it would follow the arrival. Bounded by both."""
    _, behind = started_job(backend, "jon")
    _age_column(backend, behind.id, "started_at", 60)
    started = _stamps(backend, behind.id)[1]
    consumer = LifecycleConsumer(backend)
    consumer.apply(event({"job_id": behind.id, "attempt": 1}, "n1", "succeeded", seconds=1.0,
                         ended_at=(started - dt.timedelta(seconds=30)).timestamp()))
    assert _stamps(backend, behind.id)[2] == started

    _, ahead = started_job(backend, "kim")
    before = utcnow()
    consumer.apply(event({"job_id": ahead.id, "attempt": 1}, "n1", "succeeded", seconds=1.0,
                         ended_at=time.time() + 3600))
    finished = _stamps(backend, ahead.id)[2]
    assert before <= finished <= utcnow()


def test_a_start_reported_late_is_stamped_with_the_nodes_time(backend: Backend) -> None:  # noqa: F811
    user = make_user(backend.db, "lea", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    _age_column(backend, job.id, "dispatched_at", 60)
    began = _stamps(backend, job.id)[0] + dt.timedelta(seconds=10)
    LifecycleConsumer(backend).apply(messages.lifecycle("started", job_id=job.id, attempt=1, node_id="n1",
                                                        started_at=began.timestamp()))
    assert abs((_stamps(backend, job.id)[1] - began).total_seconds()) < 0.01
