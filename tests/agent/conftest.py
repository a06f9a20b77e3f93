"""Fixtures: a comfysim node on a free port and an agent wired to in-process ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfysim import SimConfig, SimHandle, start_sim

from .harness import CKPT, Harness


@pytest.fixture
def sim() -> Iterator[SimHandle]:
    handle = start_sim(SimConfig(models={"checkpoints": [CKPT]}, step_seconds=0.01))
    yield handle
    handle.stop()


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def make(url: str, **config: Any) -> Harness:
        harness = Harness(url, tmp_path / f"h{len(harnesses)}", **config).start()
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.stop()


@pytest.fixture
def harness(sim: SimHandle, make_harness: Callable[..., Harness]) -> Harness:
    return make_harness(sim.url)
