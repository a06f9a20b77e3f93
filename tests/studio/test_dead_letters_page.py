"""The Admin page's Dead letters tab, through its handlers on the in-process bus: it lists
what was set aside and why, replays or discards the chosen ones, and only for admins."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest

from backend.assets.blobs import LocalBlobStore
from backend.config import Settings
from backend.db import Database
from backend.ports.bus import Delivery
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.workflows import Library
from studio.app import build_blocks
from tests.backend.helpers import make_user
from tests.conftest import empty_all_tables

from .test_pages import studio_of


@pytest.fixture
def admin_backend(_sqlite_db: Database, library: Library, tmp_path: Path) -> Iterator[Backend]:
    """The page does not care which database: SQLite only (building the page takes seconds)."""
    empty_all_tables(_sqlite_db)
    backend = Backend(settings=Settings(data_dir=tmp_path), db=_sqlite_db, bus=MemoryBus(), registry=MemoryRegistry(),
                      library=library, blobs=LocalBlobStore(tmp_path / "assets", durable=False))
    make_user(backend.db, "root", role="admin")
    make_user(backend.db, "cora")
    yield backend
    backend.bus.close()


def _handler(demo: gr.Blocks, name: str):  # type: ignore[no-untyped-def]
    return next(d.fn for d in demo.fns.values() if d.api_name == name)


def _set_aside(backend: Backend, *bodies: dict) -> list[str]:
    got: queue.Queue[Delivery] = queue.Queue()
    sub = backend.bus.consume_lifecycle(got.put)
    for body in bodies:
        backend.bus.publish_lifecycle(body)
        got.get(timeout=5).dead_letter(f"NotFound: no stored file for asset {body['job_id']}")
    sub.close()
    return [d.id for d in backend.bus.dead_letters()]


def test_an_admin_sees_replays_and_discards_dead_letters_a_creator_cannot(admin_backend: Backend) -> None:
    backend = admin_backend
    demo = build_blocks(studio_of(backend))
    first, second, third = _set_aside(backend, *({"job_id": f"job{i}", "type": "output", "node_id": "gpu-1"} for i in range(3)))
    admin = gr.Request(username="root")

    note, listing = _handler(demo, "admin_replay_dead_letters")(f"{first}, nope", request=admin)
    assert "1 dead letter(s) replayed" in note and "Not found: nope" in note
    assert first not in listing and second in listing and "NotFound: no stored file for asset job1" in listing
    note, listing = _handler(demo, "admin_discard_dead_letters")(second, request=admin)
    assert "1 dead letter(s) discarded" in note and second not in listing and third in listing
    note, _ = _handler(demo, "admin_replay_dead_letters")("", request=admin)
    assert "Enter the ids" in note  # nothing chosen: nothing replayed by accident
    note, listing = _handler(demo, "admin_replay_all_dead_letters")("", request=admin)
    assert "1 dead letter(s) replayed" in note and 'id="no-dead-letters"' in listing

    got: queue.Queue[Delivery] = queue.Queue()
    sub = backend.bus.consume_lifecycle(lambda d: (got.put(d), d.ack()))
    assert [got.get(timeout=5).body["job_id"] for _ in range(2)] == ["job0", "job2"]  # replayed, in order
    assert backend.bus.dead_letters() == []
    sub.close()

    [letter] = _set_aside(backend, {"job_id": "job", "type": "output"})
    with pytest.raises(gr.Error, match="Administrators only"):
        _handler(demo, "admin_replay_all_dead_letters")("", request=gr.Request(username="cora"))
    assert [d.id for d in backend.bus.dead_letters()] == [letter]
