"""PostgreSQL going away and coming back, on a private server this module stops at will.

- While it is away every transaction fails as ``DatabaseUnavailable`` ("try again in a
  moment"), never as a driver exception; after its return the first transaction works
  (the pool pings connections, so the dead ones are replaced unseen).
- The worker rides out an outage longer than any retry budget: the lifecycle consumer
  holds the events and applies them all once the database is back (none dropped, none
  dead-lettered), the dispatcher and the sweeper keep running and dispatch again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from backend import jobs
from backend.accounts import ledger
from backend.assets.blobs import LocalBlobStore
from backend.jobs import messages
from backend.config import REPO_ROOT, Settings
from backend.db import Database, migrate
from backend.db.models import JobOutput
from backend.errors import DatabaseUnavailable
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.jobs.submit import Accepted, submit
from backend.jobs.worker import Worker
from backend.workflows import Library

from .. import private_servers
from ..conftest import empty_all_tables
from ..e2e.stack import FAST_SWEEP, png_bytes, wait_for
from ..private_servers import PrivatePostgres
from .helpers import make_user
from .nodes import library_capabilities, register

#: Longer than the lifecycle consumer's old retry budget (5 tries, about 3 s), which
#: dropped the events of a restart like this one.
OUTAGE_SECONDS = 6.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    private_servers.require("postgres")
    with private_servers.private_servers("postgres") as servers:
        assert servers.postgres is not None
        yield servers.postgres


@pytest.fixture(scope="module")
def outage_db(postgres: PrivatePostgres) -> Iterator[Database]:
    db = Database(postgres.url)
    migrate.upgrade(db)
    yield db
    db.dispose()


@pytest.fixture
def backend(outage_db: Database, postgres: PrivatePostgres, tmp_path: Path) -> Iterator[Backend]:
    if not postgres.accepts():
        postgres.start()
    empty_all_tables(outage_db)
    b = Backend(settings=Settings(data_dir=tmp_path), db=outage_db, bus=MemoryBus(), registry=MemoryRegistry(),
                library=Library.load(REPO_ROOT / "workflows"), blobs=LocalBlobStore(tmp_path / "assets", durable=False))
    yield b
    b.bus.close()
    if not postgres.accepts():
        postgres.start()


def _select_one(db: Database) -> int:
    with db.read() as s:
        return int(s.execute(text("SELECT 1")).scalar_one())


def test_an_absent_database_is_database_unavailable_and_a_restart_is_not_noticed(
    outage_db: Database, postgres: PrivatePostgres
) -> None:
    assert _select_one(outage_db) == 1  # the pool holds a connection now
    postgres.stop()
    try:
        for scope in (outage_db.read, outage_db.write):
            with pytest.raises(DatabaseUnavailable, match="try again in a moment") as caught:
                with scope() as s:
                    s.execute(text("SELECT 1"))
            assert "数据库" in caught.value.zh
    finally:
        postgres.start()
    assert _select_one(outage_db) == 1  # the dead pooled connection was replaced, not used


def test_the_worker_rides_out_an_outage_longer_than_any_retry_budget(backend: Backend, postgres: PrivatePostgres) -> None:
    user = make_user(backend.db, "otto", credits=1000)
    register(backend.registry, "n1", library_capabilities(backend.library))
    node_jobs = []
    node = backend.bus.consume_jobs("n1", lambda d: (node_jobs.append(d.body), d.ack()), prefetch=10)
    worker = Worker(backend, dispatch_interval=0.2, sweep_interval=0.5, sweep_policy=FAST_SWEEP).start()
    try:
        first = _submit(backend, user.id, worker)
        msg = wait_for(lambda: node_jobs and node_jobs[0], 10, "the first job dispatched")
        lifecycle = _agent(backend, msg)
        lifecycle("submitted")
        lifecycle("started")
        wait_for(lambda: jobs.get(backend.db, first.id).state == "running", 10, "the job running")

        postgres.stop()
        began = time.monotonic()
        image = backend.blobs.write_bytes(png_bytes(40, 30))
        lifecycle("output", graph_node="9", position=0, asset_id=image.sha256, size=image.size, kind="image", format="PNG")
        lifecycle("succeeded", seconds=2.0)
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
        postgres.start()

        done = wait_for(lambda: _state_or_none(backend, first.id) == "succeeded", 30, "the held events applied")
        assert done
        with backend.db.read() as s:
            assert s.scalar(select(func.count()).select_from(JobOutput).where(JobOutput.job_id == first.id)) == 1
        assert backend.bus.dead_letters() == []  # an outage is no reason to set anything aside

        # The dispatcher and the sweeper lived through it: a new job goes out.
        second = _submit(backend, user.id, worker)
        wait_for(lambda: any(m["job_id"] == second.id for m in node_jobs), 15, "a job dispatched after the outage")
        assert ledger.verify(backend.db) == []
    finally:
        worker.stop()
        node.close()


def _submit(backend: Backend, user_id: int, worker: Worker):  # type: ignore[no-untyped-def]
    result = submit(backend, user_id, "invert-scale", {"image": _upload(backend, user_id)}, idempotency_key=uuid.uuid4().hex,
                    on_queued=worker.wake)
    assert isinstance(result, Accepted), result
    return result.job


def _upload(backend: Backend, user_id: int) -> str:
    from backend import assets

    return assets.store_upload(backend.db, backend.blobs, user_id, [png_bytes()], name="in.png",
                               max_bytes=backend.settings.max_upload_bytes, max_pixels=backend.settings.max_image_pixels).id


def _agent(backend: Backend, msg: dict):  # type: ignore[no-untyped-def]
    """Publishes lifecycle events for ``msg`` as its agent would."""
    def publish(event_type: str, /, **fields: object) -> None:
        event = messages.lifecycle(event_type, job_id=msg["job_id"], attempt=msg["attempt"], node_id="n1", **fields)  # type: ignore[arg-type]
        backend.bus.publish_lifecycle(event)
    return publish


def _state_or_none(backend: Backend, job_id: str) -> str | None:
    try:
        return jobs.get(backend.db, job_id).state
    except DatabaseUnavailable:
        return None
