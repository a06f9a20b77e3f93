"""What the lifecycle consumer does with an agent event it cannot apply: an event that fails
for its own reasons is set aside as a dead letter (never dropped) and can be replayed once
the cause is fixed; the events behind it are not held up. (An event that fails because the
database is away is retried instead: ``test_database_outage.py``.)"""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select

from backend import jobs
from backend.accounts import ledger
from backend.jobs import messages
from backend.db.models import JobOutput
from backend.jobs.dispatcher import Dispatcher
from backend.jobs.lifecycle import MAX_EVENT_ATTEMPTS, LifecycleConsumer
from backend.runtime import Backend

from ..e2e.stack import png_bytes, wait_for
from .helpers import make_user
from .nodes import library_capabilities, register
from .test_dispatch import NodeQueue, backend, event, library, txt2img  # noqa: F401 - fixtures


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
