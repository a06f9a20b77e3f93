"""Every workflow of the library runs through the whole dispatch path on simulated nodes
that have its model files: submit → dispatcher → agent → comfysim → outputs recorded.
The model-free tools also run on a node with no model files at all, like a bare ComfyUI."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from backend.config import REPO_ROOT
from backend.db import Database, migrate
from backend.db.models import JobOutput
from backend.errors import AssetStoreError
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.workflows import Library
from comfysim import SimConfig

from .. import services
from ..conftest import empty_all_tables, s3_settings
from .stack import Stack, png_bytes, running_stack

LIBRARY = Library.load(REPO_ROOT / "workflows")
MODEL_FREE = sorted(spec.name for spec in LIBRARY if not spec.models and not spec.model_slots)
TEXT = {"prompt": "a lighthouse at dusk", "subject": "a woman in a red coat", "tags": "lofi, piano", "lyrics": "[inst]"}


def mask_png(width: int, height: int) -> bytes:
    """A drawn mask as the studio stores it: painted area transparent, the rest opaque."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((width // 4, height // 4, width // 2, height // 2), fill=(0, 0, 0, 0))
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    return buf.getvalue()


def _stack(db: Database, tmp: Path, sim: SimConfig | None) -> Iterator[Stack]:
    empty_all_tables(db)
    bus, registry = MemoryBus(), MemoryRegistry()
    with running_stack(db, bus, registry, tmp, nodes=2, sim=sim) as stack:
        yield stack
    bus.close()


@pytest.fixture(scope="module")
def library_stack(tmp_path_factory: pytest.TempPathFactory, _sqlite_db: Database) -> Iterator[Stack]:
    yield from _stack(_sqlite_db, tmp_path_factory.mktemp("library"), None)


@pytest.fixture(scope="module")
def bare_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Its own database: the other stack's dispatcher must not take these jobs to nodes with models.
    tmp = tmp_path_factory.mktemp("bare")
    db = Database(f"sqlite:///{tmp / 'bare.db'}")
    migrate.upgrade(db)
    yield from _stack(db, tmp, SimConfig(step_seconds=0.01))
    db.dispose()


def params_for(stack: Stack, user, spec) -> dict:  # type: ignore[no-untyped-def]
    params: dict = {}
    for p in spec.params:
        if not p.beginner:
            continue
        if p.type == "image":
            params[p.name] = stack.upload(user, png_bytes(512, 512, (30 + len(p.name) * 20, 120, 200)))
        elif p.type == "mask":
            params[p.name] = stack.upload(user, mask_png(512, 512))
        elif p.name in TEXT:
            params[p.name] = TEXT[p.name]
    return params


def test_the_library_has_model_free_tools() -> None:
    assert {"invert-scale", "photo-resize", "photo-crop", "photo-rotate", "photo-flip", "photo-blur", "photo-sharpen",
            "photo-pad", "photo-stitch"} <= set(MODEL_FREE)


@pytest.mark.parametrize("name", LIBRARY.names())
def test_workflow_runs_end_to_end(library_stack: Stack, name: str) -> None:
    run(library_stack, name)


@pytest.mark.parametrize("name", MODEL_FREE)
def test_model_free_tool_runs_on_a_node_without_models(bare_stack: Stack, name: str) -> None:
    run(bare_stack, name)


def run(stack: Stack, name: str) -> None:
    spec = LIBRARY.get(name)
    user = stack.user(f"u-{name}"[:32], 100_000)
    job = stack.accepted(user, name, params_for(stack, user, spec), queue_if_busy=True)
    ended = stack.wait_ended([job.id], timeout=90)[job.id]
    assert ended.state == "succeeded", (ended.error_type, ended.error_message, ended.error_stage)
    with stack.db.read() as s:
        outputs = s.query(JobOutput).filter(JobOutput.job_id == job.id).all()
    assert outputs and {o.kind for o in outputs} <= {"image", "video", "audio"}
    for output in outputs:
        assert stack.backend.blobs.exists(output.asset_id)
    stack.check_books()


# ---- the distributed stack with the object store: no directory shared with any agent -----


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, _postgres_db: Database, rgw, rgw_bucket: str) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    empty_all_tables(_postgres_db)
    tmp = tmp_path_factory.mktemp("s3-library")
    studio = s3_settings(rgw, rgw_bucket)
    # The agents' credential may only put objects (the bucket policy of docs/deploy.md):
    # inputs reach them by presigned URL alone.
    rgw.allow_agent_writes(rgw_bucket)
    agents = dataclasses.replace(studio, s3_access_key=rgw.agent_access_key, s3_secret_key=rgw.agent_secret_key)
    with services.rabbit_bus() as bus, services.redis_registry() as registry, \
            running_stack(_postgres_db, bus, registry, tmp, nodes=3, s3=studio, agent_s3=agents) as stack:
        yield stack


def test_every_workflow_runs_on_the_distributed_stack_with_s3(s3_stack: Stack) -> None:
    """PostgreSQL, RabbitMQ, Redis and Ceph RGW; agents fetch inputs by presigned URL and
    upload outputs to the bucket; nothing is written to the studio's assets directory."""
    stack = s3_stack
    agent_store = stack.agents["sim-1"].uploader._blobs
    with pytest.raises(AssetStoreError, match="refused"):  # the agents' credential cannot read
        agent_store.size(stack.upload(stack.user("probe"), png_bytes(9, 9)))
    user = stack.user("s3-library", 1_000_000)
    job_ids = {stack.accepted(user, name, params_for(stack, user, LIBRARY.get(name)), queue_if_busy=True).id: name
               for name in LIBRARY.names()}
    ended = stack.wait_ended(list(job_ids), timeout=300)
    failed = {job_ids[j.id]: (j.error_type, j.error_message) for j in ended.values() if j.state != "succeeded"}
    assert failed == {}
    with stack.db.read() as s:
        outputs = s.query(JobOutput).filter(JobOutput.job_id.in_(list(job_ids))).all()
    assert {o.job_id for o in outputs} == set(job_ids)
    stored = {blob.asset_id: blob.size for blob in stack.backend.blobs.listing()}
    for output in outputs:
        assert output.asset_id in stored
        with stack.backend.blobs.open(output.asset_id) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == output.asset_id
    assert not (stack.backend.settings.data_dir / "assets").exists()
    assert all(not (stack.backend.settings.data_dir / f"agent-{i}" / "assets").exists() for i in (1, 2, 3))
    # "Draw again": the same input on a node that has it is not sent again.
    sent = sum(agent.uploader.sent for agent in stack.agents.values())
    again = stack.accepted(user, "invert-scale", params_for(stack, user, LIBRARY.get("invert-scale")), queue_if_busy=True)
    assert stack.wait_ended([again.id], timeout=60)[again.id].state == "succeeded"
    assert sum(agent.uploader.sent for agent in stack.agents.values()) <= sent + 1
    stack.check_books()
