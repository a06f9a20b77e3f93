"""Submit, dispatch, lifecycle, sweeper and cancel through the in-process bus and registry.

The agent's side is played by reading the node's job queue and publishing lifecycle
events on the bus, exactly the messages a real agent sends (the agent's own tests run it
against the simulator).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from backend import assets, jobs
from backend.accounts import ledger
from backend.assets.blobs import LocalBlobStore
from backend.jobs import backlog, limits, messages
from backend.config import REPO_ROOT, Settings
from backend.db import Database
from backend.db.models import Job, User, utcnow
from backend.jobs.dispatcher import Dispatcher
from backend.jobs.lifecycle import LifecycleConsumer
from backend.ports.bus import Delivery
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.ports.registry import Candidate
from backend.runtime import Backend
from backend.jobs.submit import Accepted, NeedsConfirmation, Rejected, cancel, submit
from backend.jobs.sweeper import SweepPolicy, Sweeper
from backend.workflows import Library

from tests.e2e.stack import png_bytes

from .helpers import make_user
from .nodes import library_capabilities, register


@pytest.fixture(scope="module")
def library() -> Library:
    return Library.load(REPO_ROOT / "workflows")


@pytest.fixture
def backend(db: Database, library: Library, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(
        settings=Settings(data_dir=tmp_path),
        db=db,
        bus=MemoryBus(),
        registry=MemoryRegistry(),
        library=library,
        blobs=LocalBlobStore(tmp_path / "assets"),
    )
    yield b
    b.bus.close()


#: Ceiling for anything that arrives through a bus thread; reached only when it never comes.
WAIT = 30.0


class NodeQueue:
    """Collects the job messages published to one node, as its agent would receive them."""

    def __init__(self, backend: Backend, node_id: str) -> None:
        self.bus = backend.bus
        self.node_id = node_id
        self.messages: queue.Queue[Delivery] = queue.Queue()
        self.sub = backend.bus.consume_jobs(node_id, self.messages.put, prefetch=100)

    def take(self, timeout: float = WAIT) -> dict:
        delivery = self.messages.get(timeout=timeout)
        delivery.ack()
        return delivery.body

    def drain(self) -> list[dict]:
        """Every job message published to the node so far, and nothing later.

        A marker is published behind them and the queue read up to it: one consumer gets
        a queue's messages in order, so no time window decides what counts as "so far".
        """
        marker = uuid.uuid4().hex
        self.bus.publish_job(self.node_id, {"drain_marker": marker})
        out = []
        while (body := self.take()).get("drain_marker") != marker:
            out.append(body)
        return out


def txt2img(backend: Backend, user_id: int, **kw) -> object:
    return submit(backend, user_id, "txt2img-sd15", {"prompt": "a red fox"}, idempotency_key=uuid.uuid4().hex, **kw)


def event(msg: dict, node_id: str, kind: str, **fields) -> dict:
    return messages.lifecycle(kind, job_id=msg["job_id"], attempt=msg["attempt"], node_id=node_id, **fields)


def test_accepted_job_is_charged_dispatched_and_published(backend: Backend) -> None:
    user = make_user(backend.db, "ana", credits=100)
    register(backend.registry, "n1", library_capabilities(backend.library))
    node = NodeQueue(backend, "n1")
    result = txt2img(backend, user.id)
    assert isinstance(result, Accepted) and result.created
    job = result.job
    assert job.state == "queued" and job.cost > 0 and job.params["seed"] >= 0
    assert Dispatcher(backend).dispatch_once() == 1
    msg = node.take()
    assert msg["job_id"] == job.id and msg["prompt_id"] == f"{job.id}-1" and msg["user_id"] == user.id
    assert msg["prompt"]["3"]["inputs"]["seed"] == job.params["seed"]
    assert msg["output_nodes"] and msg["stages"]
    assert backend.registry.holds("n1", f"{job.id}-1")
    assert jobs.get(backend.db, job.id).state == "dispatched"
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 100 - job.cost


def test_an_input_is_named_by_its_asset_id_and_for_one_release_by_its_old_name(backend: Backend) -> None:
    """Agents upgrade after the workers: an agent of the release before reads ``asset``."""
    user = make_user(backend.db, "ida", credits=100)
    register(backend.registry, "n1", library_capabilities(backend.library))
    node = NodeQueue(backend, "n1")
    picture = assets.store_upload(backend.db, backend.blobs, user.id, [png_bytes(64, 64)], name="in.png",
                                 max_bytes=10_000_000, max_pixels=10_000_000)
    result = submit(backend, user.id, "img2img-sd15", {"prompt": "a fox", "image": picture.id},
                    idempotency_key=uuid.uuid4().hex)
    assert isinstance(result, Accepted), result
    assert Dispatcher(backend).dispatch_once() == 1
    [upload] = node.take()["uploads"]
    assert upload["asset_id"] == upload["asset"] == picture.id
    assert upload["name"] == messages.upload_name(picture.id) and upload["kind"] == "image"


def test_no_capable_node_is_a_clear_rejection_and_charges_nothing(backend: Backend) -> None:
    user = make_user(backend.db, "bea", credits=100)
    register(backend.registry, "cpu-only", library_capabilities(backend.library, models=False))
    for confirmed in (False, True):  # "queue anyway" does not queue a job no node can run
        result = txt2img(backend, user.id, queue_if_busy=confirmed)
        assert isinstance(result, Rejected) and "No online node can run this workflow" in result.message["en"]
        assert "没有在线节点" in result.message["zh"]
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 100


def test_invalid_parameter_and_insufficient_credits_are_rejections(backend: Backend) -> None:
    user = make_user(backend.db, "cal", credits=1)
    register(backend.registry, "n1", library_capabilities(backend.library))
    bad = submit(backend, user.id, "txt2img-sd15", {"prompt": "x", "steps": 5}, idempotency_key="k1")
    assert isinstance(bad, Rejected) and "expert" in bad.message["en"]
    poor = txt2img(backend, user.id)
    assert isinstance(poor, Rejected) and "balance is 1" in poor.message["en"]
    assert ledger.verify(backend.db) == []


def test_all_busy_needs_confirmation_then_queues_and_runs_later(backend: Backend) -> None:
    user = make_user(backend.db, "dee", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=1)
    node = NodeQueue(backend, "n1")
    lifecycle = LifecycleConsumer(backend)
    first = txt2img(backend, user.id)
    assert isinstance(first, Accepted)
    Dispatcher(backend).dispatch_once()
    running = node.take()

    busy = txt2img(backend, user.id)
    assert isinstance(busy, NeedsConfirmation) and busy.wait_seconds >= 1
    assert "queue anyway" in busy.message["en"].lower() and "排队" in busy.message["zh"]
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 1000 - first.job.cost  # nothing charged for the question

    queued = txt2img(backend, user.id, queue_if_busy=True)
    assert isinstance(queued, Accepted)
    assert Dispatcher(backend).dispatch_once() == 0  # still busy
    for kind in ("submitted", "started", "succeeded"):
        lifecycle.apply(event(running, "n1", kind, prompt_id=running["prompt_id"]))
    assert jobs.get(backend.db, first.job.id).state == "succeeded"
    assert Dispatcher(backend).dispatch_once() == 1
    assert node.take()["job_id"] == queued.job.id


def test_idle_node_first_then_least_work_and_loaded_checkpoint(backend: Backend) -> None:
    user = make_user(backend.db, "eve", credits=1000)
    caps = library_capabilities(backend.library)
    register(backend.registry, "a", caps, slots=2)
    register(backend.registry, "b", caps, slots=2, checkpoint="v1-5-pruned-emaonly.safetensors")
    queues = {n: NodeQueue(backend, n) for n in "ab"}
    dispatcher = Dispatcher(backend)
    txt2img(backend, user.id)
    dispatcher.dispatch_once()
    assert [n for n, q in queues.items() if q.drain()] == ["b"]  # both idle: the one with the checkpoint
    txt2img(backend, user.id)
    dispatcher.dispatch_once()
    assert [n for n, q in queues.items() if q.drain()] == ["a"]  # an idle node beats a busy one


def test_node_without_the_model_or_memory_is_never_chosen(backend: Backend) -> None:
    user = make_user(backend.db, "fox", credits=1000)
    register(backend.registry, "small", library_capabilities(backend.library), vram_mb=64)
    register(backend.registry, "nomodel", library_capabilities(backend.library, models=False))
    register(backend.registry, "good", library_capabilities(backend.library), slots=1)
    queues = {n: NodeQueue(backend, n) for n in ("small", "nomodel", "good")}
    for _ in range(3):
        txt2img(backend, user.id, queue_if_busy=True)
    assert Dispatcher(backend).dispatch_once() == 1
    assert {n: len(q.drain()) for n, q in queues.items()} == {"small": 0, "nomodel": 0, "good": 1}


def test_fairness_a_burst_does_not_starve_another_user(backend: Backend) -> None:
    a, b = make_user(backend.db, "alpha", credits=10_000), make_user(backend.db, "beta", credits=10_000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)
    node = NodeQueue(backend, "n1")
    lifecycle = LifecycleConsumer(backend)
    dispatcher = Dispatcher(backend)
    for _ in range(30):
        assert isinstance(txt2img(backend, a.id, queue_if_busy=True), Accepted)
    dispatcher.dispatch_once()  # A's first two take both slots before B arrives
    b_jobs = [txt2img(backend, b.id, queue_if_busy=True).job.id for _ in range(3)]  # type: ignore[union-attr]
    in_flight = [m["job_id"] for m in node.drain()]
    started_after_b: list[str] = []
    while in_flight:
        done = jobs.get(backend.db, in_flight.pop(0))  # the oldest finishes, one slot frees
        lifecycle.apply(messages.lifecycle("succeeded", job_id=done.id, attempt=done.attempts, node_id="n1"))
        dispatcher.dispatch_once()
        for msg in node.drain():
            started_after_b.append(msg["job_id"])
            in_flight.append(msg["job_id"])
    assert len(started_after_b) == 31
    positions = sorted(started_after_b.index(j) for j in b_jobs)
    # Alternating with A from the first free slot on: B's jobs are 1st, 3rd and 5th.
    assert positions == [0, 2, 4], positions
    assert ledger.verify(backend.db) == []


def test_runtime_failure_is_refunded_once_with_the_stage_in_the_reason(backend: Backend) -> None:
    user = make_user(backend.db, "gil", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    node = NodeQueue(backend, "n1")
    events: queue.Queue[dict] = queue.Queue()
    backend.bus.subscribe_user_events(events.put)
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    msg = node.take()
    lifecycle = LifecycleConsumer(backend)
    failed = messages.lifecycle(
        "failed", job_id=job.id, attempt=1, node_id="n1", error_type="IndexError", message="index 3 is out of bounds\n",
        stage="Sampling",
    )
    for _ in range(3):  # redelivered three times
        lifecycle.apply(failed)
    stored = jobs.get(backend.db, job.id)
    assert (stored.state, stored.error_type, stored.error_stage) == ("failed", "IndexError", "Sampling")
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 500
    assert not backend.registry.holds("n1", f"{job.id}-1")
    seen = [events.get(timeout=WAIT) for _ in range(2)]
    assert [e["type"] for e in seen] == ["queued", "failed"]
    assert seen[1]["refunded"] == job.cost and "“Sampling”" in seen[1]["reason"]["en"]
    assert "IndexError" in seen[1]["reason"]["zh"] and seen[1]["user_id"] == user.id
    assert msg["attempt"] == 1 and ledger.verify(backend.db) == []


def test_events_of_an_older_attempt_are_ignored(backend: Backend) -> None:
    user = make_user(backend.db, "hop", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    lifecycle = LifecycleConsumer(backend)
    lifecycle.apply(messages.lifecycle("succeeded", job_id=job.id, attempt=7, node_id="n1"))
    lifecycle.apply(messages.lifecycle("failed", job_id=job.id, attempt=1, node_id="other", error_type="X", message=""))
    assert jobs.get(backend.db, job.id).state == "dispatched"


def test_sweeper_requeues_unstarted_and_fails_started_jobs_of_a_lost_node(backend: Backend) -> None:
    user = make_user(backend.db, "ivy", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2, ttl=30)
    first, second = (txt2img(backend, user.id).job for _ in range(2))  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    LifecycleConsumer(backend).apply(messages.lifecycle("started", job_id=first.id, attempt=1, node_id="n1"))
    backend.registry.remove("n1")  # heartbeat gone
    now = [0.0]
    sweeper = Sweeper(backend, clock=lambda: now[0])
    sweeper.sweep_once()
    # Its ComfyUI may still run them: they wait for the agent for agent_lost_after.
    now[0] = SweepPolicy().agent_lost_after - 1
    sweeper.sweep_once()
    assert (jobs.get(backend.db, first.id).state, jobs.get(backend.db, second.id).state) == ("running", "dispatched")
    now[0] = SweepPolicy().agent_lost_after
    sweeper.sweep_once()
    assert jobs.get(backend.db, first.id).state == "failed"
    assert jobs.get(backend.db, first.id).error_type == "NodeLost"
    requeued = jobs.get(backend.db, second.id)
    assert requeued.state == "queued" and requeued.attempts == 1
    assert backend.registry.reservations("n1") == {}
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 500 - second.cost
    # The node comes back: the requeued job goes out again as attempt 2. The stale
    # messages of attempt 1 still in the queue hold no reservation, so its agent drops them.
    register(backend.registry, "n1", library_capabilities(backend.library))
    node = NodeQueue(backend, "n1")
    Dispatcher(backend).dispatch_once()
    sent = [m["prompt_id"] for m in node.drain()]
    assert sent == [f"{first.id}-1", f"{second.id}-1", f"{second.id}-2"]
    assert [p for p in sent if backend.registry.holds("n1", p)] == [f"{second.id}-2"]
    assert ledger.verify(backend.db) == []


def test_sweeper_restores_reservations_after_the_registry_lost_them(backend: Backend) -> None:
    user = make_user(backend.db, "jay", credits=500)
    caps = library_capabilities(backend.library)
    register(backend.registry, "n1", caps)
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    backend.registry.clear()  # like Redis restarted with its data gone
    register(backend.registry, "n1", caps)  # the agent re-registers
    Sweeper(backend).sweep_once()
    assert backend.registry.holds("n1", f"{job.id}-1")


def test_sweeper_releases_leftover_reservations_only_when_seen_twice(backend: Backend) -> None:
    register(backend.registry, "n1", library_capabilities(backend.library))
    backend.registry.restore("n1", {"f" * 32: 3.0})
    sweeper = Sweeper(backend)
    sweeper.sweep_once()
    assert backend.registry.holds("n1", "f" * 32)  # could be a dispatch in flight
    sweeper.sweep_once()
    assert not backend.registry.holds("n1", "f" * 32)


def test_sweeper_republishes_a_dispatch_nobody_took(backend: Backend) -> None:
    user = make_user(backend.db, "kai", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()  # published, but no agent consumes yet
    node = NodeQueue(backend, "n1")
    dispatched_at = jobs.get(backend.db, job.id).dispatched_at
    Sweeper(backend, policy=SweepPolicy(republish_after=0.0)).sweep_once()
    assert [m["prompt_id"] for m in node.drain()] == [f"{job.id}-1"] * 2  # same attempt: the agent dedupes
    # The record keeps when the attempt was made: its node may have run it already, and a
    # later stamp would end after the job did (the chaos checker counted it as held twice).
    assert jobs.get(backend.db, job.id).dispatched_at == dispatched_at


STALE_ACTIONS = {
    "republish": lambda sweeper, job: sweeper._republish(job),
    "node-lost": lambda sweeper, job: sweeper._node_lost(job),
    "timeout": lambda sweeper, job: sweeper._fail(job, "Timeout", "ran too long"),
}


@pytest.mark.parametrize("action", list(STALE_ACTIONS))
def test_sweeper_leaves_alone_a_dispatch_that_moved_on_after_it_read_it(backend: Backend, action: str) -> None:
    """The sweeper's copy says attempt 1 is dispatched; meanwhile the dispatcher put the job
    back in the backlog (its publish was not confirmed) and dispatched attempt 2. Nothing
    the sweeper decided about attempt 1 touches attempt 2: republishing the old attempt or
    requeueing the new one ran jobs twice, failing it fails a job that is fine."""
    user = make_user(backend.db, "kit", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    node = NodeQueue(backend, "n1")
    stale = _dispatched_rows(backend)[job.id]  # what a pass read before the requeue
    with backend.db.write() as s:
        assert jobs.transition(s, job.id, "queued", expect=("dispatched",))
    backend.registry.release("n1", f"{job.id}-1")
    Dispatcher(backend).dispatch_once()  # attempt 2
    assert [m["prompt_id"] for m in node.drain()] == [f"{job.id}-1", f"{job.id}-2"]  # the dispatcher's
    assert not STALE_ACTIONS[action](Sweeper(backend, policy=SweepPolicy(republish_after=0.0)), stale)
    assert not backend.registry.holds("n1", f"{job.id}-1")
    assert backend.registry.holds("n1", f"{job.id}-2")
    assert [m["prompt_id"] for m in node.drain()] == [], "attempt 1 republished"
    after = jobs.get(backend.db, job.id)
    assert (after.state, after.attempts) == ("dispatched", 2)
    assert ledger.balance_of(backend.db, user.id) == 500 - after.cost


@pytest.mark.parametrize("republished", [False, True], ids=["alone", "republished-meanwhile"])
def test_a_failed_publish_puts_back_only_its_own_dispatch(backend: Backend, republished: bool) -> None:
    """A publish the broker did not confirm puts the job back in the backlog and frees its
    slot. But while the dispatcher waited for that answer, the sweeper may have found the
    dispatch unconsumed and republished it: requeueing then dispatches attempt 2 beside the
    republished attempt 1, and the job runs twice (the loaded chaos run saw it). Only the
    dispatch the dispatcher made, with the stamp it made it with, goes back."""
    user = make_user(backend.db, "kim", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    ours = _dispatched_rows(backend)[job.id]  # the dispatch as the dispatcher stamped it
    if republished:
        Sweeper(backend, policy=SweepPolicy(republish_after=0.0)).sweep_once()
    backend.bus.close()  # the publish of this dispatch fails
    spec = backend.library.get(ours.workflow)
    assert ours.updated_at == ours.dispatched_at  # one stamp
    assert not Dispatcher(backend).publish(spec, ours, "n1", 1, stamped=ours.dispatched_at, aliases={})
    after = jobs.get(backend.db, job.id)
    if republished:
        assert (after.state, after.attempts) == ("dispatched", 1), "a republished dispatch went back to the backlog"
        assert backend.registry.holds("n1", f"{job.id}-1")
    else:
        assert (after.state, after.attempts) == ("queued", 1)
        assert not backend.registry.holds("n1", f"{job.id}-1")


def _dispatched_rows(backend: Backend) -> dict[str, Job]:
    with backend.db.read() as s:
        rows = list(s.scalars(select(Job).where(Job.state == "dispatched")))
        s.expunge_all()
        return {row.id: row for row in rows}


def started_job(backend: Backend, user_name: str) -> tuple[int, Job]:
    """A user with 500 credits and their txt2img job, started on node ``n1``."""
    user = make_user(backend.db, user_name, credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    LifecycleConsumer(backend).apply(messages.lifecycle("started", job_id=job.id, attempt=1, node_id="n1"))
    return user.id, job


def _age_column(backend: Backend, job_id: str, column: str, seconds: float) -> None:
    """Move a job's timestamp into the past, as if ``seconds`` had gone by since."""
    with backend.db.write() as s:
        s.execute(update(Job).where(Job.id == job_id).values({column: utcnow() - dt.timedelta(seconds=seconds)}))


def _failed_events(events: queue.Queue[dict], job_id: str) -> dict:
    while (e := events.get(timeout=WAIT))["job_id"] != job_id or e["type"] != "failed":
        pass
    return e


def test_sweeper_fails_a_job_running_far_beyond_its_estimate_and_refunds_it(backend: Backend) -> None:
    user = make_user(backend.db, "ron", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=2)
    events: queue.Queue[dict] = queue.Queue()
    backend.bus.subscribe_user_events(events.put)
    slow, late = (txt2img(backend, user.id).job for _ in range(2))  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()
    lifecycle = LifecycleConsumer(backend)
    for job in (slow, late):
        lifecycle.apply(messages.lifecycle("started", job_id=job.id, attempt=1, node_id="n1"))
    # The limit is max(min_run_timeout, factor × estimate) = 100 s here.
    policy = SweepPolicy(min_run_timeout=60.0, run_timeout_factor=100.0 / slow.estimate_seconds)
    _age_column(backend, slow.id, "started_at", 80)  # over the minimum, under the estimate's limit
    _age_column(backend, late.id, "started_at", 120)
    Sweeper(backend, policy=policy).sweep_once()
    assert jobs.get(backend.db, slow.id).state == "running"
    ended = jobs.get(backend.db, late.id)
    assert (ended.state, ended.error_type) == ("failed", "Timeout")
    assert list(backend.registry.reservations("n1")) == [f"{slow.id}-1"]
    told = _failed_events(events, late.id)
    assert told["refunded"] == late.cost and "Timeout" in told["reason"]["en"]
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 500 - slow.cost
    assert ledger.verify(backend.db) == []


def test_sweeper_fails_a_job_no_node_took_after_the_last_attempt_and_refunds_it(backend: Backend) -> None:
    user = make_user(backend.db, "sam", credits=500)
    register(backend.registry, "n1", library_capabilities(backend.library))
    events: queue.Queue[dict] = queue.Queue()
    backend.bus.subscribe_user_events(events.put)
    job = txt2img(backend, user.id).job  # type: ignore[union-attr]
    Dispatcher(backend).dispatch_once()  # attempt 1; no agent ever says "submitted"
    node = NodeQueue(backend, "n1")
    assert [m["prompt_id"] for m in node.drain()] == [f"{job.id}-1"]

    _age_column(backend, job.id, "updated_at", 60)  # dispatched (or last republished) a minute ago
    Sweeper(backend, policy=SweepPolicy(republish_after=30.0, max_attempts=2)).sweep_once()
    assert [m["prompt_id"] for m in node.drain()] == [f"{job.id}-1"]  # attempts left: sent again
    assert jobs.get(backend.db, job.id).state == "dispatched"

    _age_column(backend, job.id, "updated_at", 60)
    Sweeper(backend, policy=SweepPolicy(republish_after=30.0, max_attempts=1)).sweep_once()
    ended = jobs.get(backend.db, job.id)
    assert (ended.state, ended.error_type) == ("failed", "Undeliverable")
    assert node.drain() == [] and backend.registry.reservations("n1") == {}
    assert _failed_events(events, job.id)["refunded"] == job.cost
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 500
    assert ledger.verify(backend.db) == []


def test_sweeper_gives_an_offline_node_its_grace_period(backend: Backend) -> None:
    user_id, job = started_job(backend, "tia")
    register(backend.registry, "n1", library_capabilities(backend.library), online=False)  # ComfyUI down
    now = [1000.0]
    sweeper = Sweeper(backend, policy=SweepPolicy(offline_grace=10.0), clock=lambda: now[0])
    sweeper.sweep_once()  # offline from here on
    now[0] += 9.9
    sweeper.sweep_once()
    assert jobs.get(backend.db, job.id).state == "running"
    now[0] += 0.1
    sweeper.sweep_once()
    ended = jobs.get(backend.db, job.id)
    assert (ended.state, ended.error_type) == ("failed", "NodeLost")
    with backend.db.read() as s:
        assert ledger.balance(s, user_id) == 500


def test_a_late_requeue_of_a_started_job_is_ignored(backend: Backend) -> None:
    _, job = started_job(backend, "uma")
    requeue = messages.lifecycle("requeue", job_id=job.id, attempt=1, node_id="n1", reason="late")
    LifecycleConsumer(backend).apply(requeue)
    assert jobs.get(backend.db, job.id).state == "running"  # running it again elsewhere would run it twice


def test_cancel_refunds_and_frees_the_slot(backend: Backend) -> None:
    user, other = make_user(backend.db, "lou", credits=500), make_user(backend.db, "max", credits=5)
    register(backend.registry, "n1", library_capabilities(backend.library))
    waiting, dispatched = (txt2img(backend, user.id, queue_if_busy=True).job for _ in range(2))  # type: ignore[union-attr]
    from backend.errors import NotFound

    with pytest.raises(NotFound):
        cancel(backend, waiting.id, user_id=other.id)  # someone else's job does not exist for them
    backend.registry.heartbeat(backend.registry.nodes()[0].state.__class__(**{**backend.registry.nodes()[0].state.__dict__, "slots": 1}))
    Dispatcher(backend).dispatch_once()
    assert cancel(backend, waiting.id, user_id=user.id)
    assert cancel(backend, dispatched.id, user_id=user.id)
    assert {jobs.get(backend.db, j.id).state for j in (waiting, dispatched)} == {"cancelled"}
    assert backend.registry.reservations("n1") == {}
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 500
    assert ledger.verify(backend.db) == []


def test_a_capped_backlog_read_takes_jobs_in_the_order_a_pass_serves_them(backend: Backend) -> None:
    register(backend.registry, "n1", library_capabilities(backend.library), slots=1)
    users = [make_user(backend.db, name, credits=1000) for name in ("uma", "uli", "uta")]
    made = {u.id: [txt2img(backend, u.id, queue_if_busy=True).job.id for _ in range(3)] for u in users}  # type: ignore[union-attr]
    with backend.db.write() as s:  # uli was served longest ago, uta never: uta first, then uli, then uma
        s.execute(update(User).where(User.id == users[0].id).values(last_served_at=utcnow()))
        s.execute(update(User).where(User.id == users[1].id).values(last_served_at=utcnow() - dt.timedelta(hours=1)))
    lines = backlog.lines(backend.db, per_user=4, limit=5)
    assert [[job.id for job in line] for line in lines] == [
        made[users[2].id][:2], made[users[1].id][:2], made[users[0].id][:1]]


def test_a_pass_larger_than_a_batch_places_every_job_once_and_fairly(backend: Backend) -> None:
    caps = library_capabilities(backend.library)
    nodes = [f"n{i:02d}" for i in range(20)]
    for node in nodes:
        register(backend.registry, node, caps, slots=2)
    queues = {node: NodeQueue(backend, node) for node in nodes}
    users = [make_user(backend.db, name, credits=10_000) for name in ("ria", "rob", "roy")]
    made = [txt2img(backend, u.id, queue_if_busy=True).job.id for u in users for _ in range(20)]  # type: ignore[union-attr]
    assert Dispatcher(backend).dispatch_once() == 40
    sent = [m["job_id"] for q in queues.values() for m in q.drain()]
    assert len(sent) == len(set(sent)) == 40
    by_user = {u.id: sum(jobs.get(backend.db, j).user_id == u.id for j in sent) for u in users}
    assert sorted(by_user.values()) == [13, 13, 14]  # one per user in turn
    for job_id in made:
        job = jobs.get(backend.db, job_id)
        assert (job.state == "dispatched") == (job_id in sent)
        if job_id in sent:
            assert job.attempts == 1 and backend.registry.holds(job.node_id, f"{job_id}-1")  # type: ignore[arg-type]
    assert all(len(backend.registry.reservations(node)) == 2 for node in nodes)


def test_concurrent_submits_of_one_idempotency_key_make_one_job_and_one_charge(backend: Backend) -> None:
    user = make_user(backend.db, "kai", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library))
    start = threading.Barrier(8)

    def send(_: int) -> object:
        start.wait(WAIT)
        return submit(backend, user.id, "txt2img-sd15", {"prompt": "a red fox"}, idempotency_key="one-request")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert all(isinstance(r, Accepted) for r in results)
    assert len({r.job.id for r in results}) == 1 and sum(r.created for r in results) == 1
    with backend.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.user_id == user.id)) == 1
        assert ledger.balance(s, user.id) == 1000 - results[0].job.cost
    assert ledger.verify(backend.db) == []


def test_a_replayed_key_gets_its_job_even_where_a_new_request_is_refused(backend: Backend) -> None:
    user = make_user(backend.db, "lea", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=1)
    limits.set_override(backend.db, user.id, "max_waiting_jobs", 1)
    first = submit(backend, user.id, "txt2img-sd15", {"prompt": "a red fox"}, idempotency_key="first")
    assert isinstance(first, Accepted) and first.created
    refused = txt2img(backend, user.id, queue_if_busy=True)  # a second waiting job is over the limit
    assert isinstance(refused, Rejected) and "max_waiting_jobs" in refused.message["en"]
    again = submit(backend, user.id, "txt2img-sd15", {"prompt": "a red fox"}, idempotency_key="first")
    assert isinstance(again, Accepted) and not again.created and again.job.id == first.job.id
    with backend.db.read() as s:
        assert ledger.balance(s, user.id) == 1000 - first.job.cost


def test_parallel_submits_stop_exactly_at_a_waiting_limit(backend: Backend) -> None:
    user = make_user(backend.db, "max", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=1)
    limits.set_override(backend.db, user.id, "max_waiting_jobs", 3)
    start = threading.Barrier(8)

    def send(_: int) -> object:
        start.wait(WAIT)
        return txt2img(backend, user.id, queue_if_busy=True)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert sum(isinstance(r, Accepted) for r in results) == 3
    assert all("max_waiting_jobs" in r.message["en"] for r in results if isinstance(r, Rejected))
    assert ledger.verify(backend.db) == []


def test_concurrent_dispatchers_fill_every_slot_once(backend: Backend) -> None:
    user = make_user(backend.db, "ned", credits=100_000)
    nodes = ("n1", "n2", "n3")
    for n in nodes:
        register(backend.registry, n, library_capabilities(backend.library), slots=2)
    queues = {n: NodeQueue(backend, n) for n in nodes}
    for _ in range(20):
        txt2img(backend, user.id, queue_if_busy=True)
    dispatchers = [Dispatcher(backend) for _ in range(4)]
    barrier = threading.Barrier(len(dispatchers))

    def run(d: Dispatcher) -> int:
        barrier.wait()
        return d.dispatch_once()

    with ThreadPoolExecutor(len(dispatchers)) as pool:
        placed = sum(pool.map(run, dispatchers))
    with backend.db.read() as s:
        dispatched = list(s.scalars(select(Job).where(Job.state == "dispatched")))
    # Every slot is taken (a pass that lost a race ran again), each by one job, once.
    assert placed == len(dispatched) == 6 and {j.attempts for j in dispatched} == {1}
    for n, node in queues.items():
        on_node = sorted(f"{j.id}-1" for j in dispatched if j.node_id == n)
        assert len(on_node) == 2
        assert sorted(m["prompt_id"] for m in node.drain()) == on_node  # published once, to its node
        assert sorted(backend.registry.reservations(n)) == on_node
    assert ledger.verify(backend.db) == []


class GatedRegistry(MemoryRegistry):
    """The in-process registry that runs ``between`` right after its first successful
    reservation: the test acts while a dispatcher holds a slot and has not yet marked its
    job ``dispatched`` — the window every race between dispatchers goes through."""

    def __init__(self, between: Callable[[], None]) -> None:
        super().__init__()
        self._between: Callable[[], None] | None = between

    def reserve(self, candidates: Sequence[Candidate], job_id: str, estimate_seconds: float) -> str | None:
        node = super().reserve(candidates, job_id, estimate_seconds)
        if node is not None and self._between is not None:
            between, self._between = self._between, None
            between()
        return node


def gated(backend: Backend, between: Callable[[], None]) -> Backend:
    return dataclasses.replace(backend, registry=GatedRegistry(between))


def test_a_pass_that_loses_its_jobs_runs_again_so_no_slot_stays_free(backend: Backend) -> None:
    user = make_user(backend.db, "oda", credits=1000)
    waiting: list[str] = []

    def meanwhile() -> None:
        # The first pass holds the only slot for the oldest job. The user cancels every job
        # that pass has read; another dispatcher finds the node full and gives up.
        for job_id in waiting[: backlog.PER_USER]:
            assert cancel(backend, job_id, user_id=user.id)
        assert Dispatcher(backend).dispatch_once() == 0

    backend = gated(backend, meanwhile)
    register(backend.registry, "n1", library_capabilities(backend.library), slots=1)
    node = NodeQueue(backend, "n1")
    waiting += [txt2img(backend, user.id, queue_if_busy=True).job.id for _ in range(backlog.PER_USER + 1)]  # type: ignore[union-attr]
    assert Dispatcher(backend).dispatch_once() == 1
    last = waiting[-1]
    assert [m["job_id"] for m in node.drain()] == [last]
    assert list(backend.registry.reservations("n1")) == [f"{last}-1"]
    assert ledger.verify(backend.db) == []


def test_a_dispatcher_with_a_stale_copy_never_reuses_an_attempt(backend: Backend) -> None:
    user = make_user(backend.db, "pia", credits=1000)
    caps = library_capabilities(backend.library)
    queues: dict[str, NodeQueue] = {}
    job: list[Job] = []

    def meanwhile() -> None:
        # While the first pass holds a node for attempt 1, another dispatcher sends the job
        # to the other node as attempt 1, whose agent hands it back: queued, attempts == 1.
        assert Dispatcher(backend).dispatch_once() == 1
        other = jobs.get(backend.db, job[0].id).node_id
        first = queues[other].take()
        assert first["prompt_id"] == f"{job[0].id}-1"
        LifecycleConsumer(backend).apply(event(first, other, "requeue", reason="busy"))
        assert jobs.get(backend.db, job[0].id).state == "queued"

    backend = gated(backend, meanwhile)
    for n in ("n1", "n2"):
        register(backend.registry, n, caps, slots=1)
        queues[n] = NodeQueue(backend, n)
    job.append(txt2img(backend, user.id).job)  # type: ignore[union-attr]
    assert Dispatcher(backend).dispatch_once() == 1
    # The stale pass lost (the same state, but a newer attempt) and released its node; its
    # rerun sent the job as attempt 2, which no agent has seen.
    stored = jobs.get(backend.db, job[0].id)
    assert (stored.state, stored.attempts) == ("dispatched", 2)
    ticket = f"{stored.id}-2"
    assert {n: [m["prompt_id"] for m in q.drain()] for n, q in queues.items()} == {
        n: [ticket] if n == stored.node_id else [] for n in queues
    }
    assert {n: list(backend.registry.reservations(n)) for n in queues} == {
        n: [ticket] if n == stored.node_id else [] for n in queues
    }
