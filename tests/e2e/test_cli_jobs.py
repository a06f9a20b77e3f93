"""``python -m backend job …`` against a running distributed stack: the operator's way to
run a workflow and follow it from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.config import REPO_ROOT
from backend.db import Database

from .. import services
from ..conftest import empty_all_tables
from .stack import Stack, png_bytes, running_stack


@pytest.fixture
def distributed(_postgres_db: Database, tmp_path: Path) -> Iterator[Stack]:
    empty_all_tables(_postgres_db)
    with services.rabbit_bus() as bus, services.redis_registry() as registry:
        with running_stack(_postgres_db, bus, registry, tmp_path) as stack:
            yield stack


def cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    bus, registry = stack.backend.bus, stack.backend.registry
    env = {
        **os.environ,
        "STUDIO_DATABASE_URL": stack.db.url,
        "STUDIO_DATA_DIR": str(stack.backend.settings.data_dir),
        "STUDIO_AMQP_URL": services.AMQP_URL,
        "STUDIO_REDIS_URL": services.REDIS_URL,
        "STUDIO_BUS_PREFIX": bus.prefix,  # type: ignore[attr-defined]
        "STUDIO_REGISTRY_PREFIX": registry.key_prefix.strip("{}:"),  # type: ignore[attr-defined]
    }
    return subprocess.run(
        [sys.executable, "-m", "backend", *argv], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_submit_wait_show_and_cancel(distributed: Stack, tmp_path: Path) -> None:
    stack = distributed
    stack.user("olga", 500)
    picture = tmp_path / "in.png"
    picture.write_bytes(png_bytes(40, 30))

    nodes = cli(stack, "--json", "nodes")
    assert nodes.returncode == 0, nodes.stderr
    assert {n["node_id"] for n in json.loads(nodes.stdout)} == {"sim-1", "sim-2"}

    run = cli(stack, "job", "submit", "olga", "invert-scale", "--image", f"image={picture}", "scale=2", "--wait")
    assert run.returncode == 0, run.stderr + run.stdout
    lines = run.stdout.splitlines()
    assert lines[0].startswith("job ") and "queued" in lines[0]
    assert any("output" in line for line in lines) and any(line.strip() == "succeeded" for line in lines)
    output_path = next(line.split("output: ", 1)[1] for line in lines if "output: /" in line)
    from PIL import Image

    with Image.open(output_path) as out:
        assert out.size == (80, 60)  # scaled ×2
    job_id = lines[0].split()[1]

    shown = cli(stack, "--json", "job", "show", job_id)
    assert json.loads(shown.stdout)["state"] == "succeeded"
    again = cli(stack, "job", "cancel", job_id)
    assert again.returncode == 2 and "already" in again.stderr
    stack.check_books()


def test_submit_in_embedded_mode_explains_what_is_needed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_DATA_DIR"] = str(tmp_path)
    subprocess.run([sys.executable, "-m", "backend", "init"], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    run = subprocess.run(
        [sys.executable, "-m", "backend", "job", "submit", "x", "invert-scale"], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 2 and "STUDIO_REDIS_URL" in run.stderr
