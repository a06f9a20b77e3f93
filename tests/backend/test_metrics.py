"""The Prometheus endpoint's text: parseable, and counting what the database holds."""

from __future__ import annotations

import re
from pathlib import Path

from backend import jobs, metrics
from backend.assets.blobs import LocalBlobStore
from backend.config import REPO_ROOT, Settings
from backend.db import Database
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.runtime import Backend
from backend.workflows import Library

from .helpers import charged_job, make_user
from .nodes import library_capabilities, register

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')


def test_metrics_count_jobs_nodes_and_money(db: Database, tmp_path: Path) -> None:
    library = Library.load(REPO_ROOT / "workflows")
    backend = Backend(Settings(data_dir=tmp_path), db, MemoryBus(), MemoryRegistry(), library, LocalBlobStore(tmp_path))
    user = make_user(db, "mia", credits=100)
    done, failed, _waiting = (charged_job(db, user, 5) for _ in range(3))
    with db.write() as s:
        jobs.transition(s, done.id, "dispatched")
    jobs.succeed(db, done.id)
    jobs.fail(db, failed.id, error_type="X", message="y")
    register(backend.registry, "gpu-1", library_capabilities(library), slots=3)

    text = metrics.render(backend)
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    assert 'studio_jobs{state="queued"} 1' in text
    assert 'studio_jobs{state="succeeded"} 1' in text and 'studio_jobs{state="failed"} 1' in text
    assert "studio_backlog_jobs 1" in text
    assert "studio_credits_charged_total 15" in text and "studio_credits_refunded_total 5" in text
    assert 'studio_node_slots{node="gpu-1",simulated="false"} 3' in text
    assert "studio_nodes_online 1" in text
    backend.bus.close()
