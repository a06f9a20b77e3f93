"""Progress pacing, with the clock passed in: a few events a second, the latest never lost."""

from __future__ import annotations

import pytest

from agent.pacing import ProgressPacer


def step(value: int) -> dict[str, int]:
    return {"value": value, "max": 100}


def test_the_first_value_goes_out_at_once_then_at_most_one_per_interval() -> None:
    pacer = ProgressPacer(0.25)
    assert pacer.offer(step(1), now=10.0) == step(1)
    assert pacer.offer(step(2), now=10.125) is None
    assert pacer.offer(step(3), now=10.2499) is None
    assert pacer.offer(step(4), now=10.25) == step(4)  # exactly one interval later


def test_a_held_back_value_is_replaced_by_a_newer_one_and_comes_out_when_due() -> None:
    pacer = ProgressPacer(0.1)
    pacer.offer(step(1), now=0.0)
    pacer.offer(step(2), now=0.02)
    pacer.offer(step(3), now=0.04)
    assert pacer.deadline == pytest.approx(0.1)
    assert pacer.due(now=0.09) is None
    assert pacer.due(now=0.1) == step(3)  # the latest, not the first held back
    assert pacer.deadline is None and pacer.due(now=5.0) is None  # sent once, then forgotten


def test_a_value_sent_when_due_starts_the_next_interval() -> None:
    pacer = ProgressPacer(0.1)
    pacer.offer(step(1), now=0.0)
    pacer.offer(step(2), now=0.05)
    assert pacer.due(now=0.12) == step(2)
    assert pacer.offer(step(3), now=0.15) is None  # 0.03 after the last one out
    assert pacer.deadline == pytest.approx(0.22)


def test_interval_zero_sends_every_value() -> None:
    pacer = ProgressPacer(0)
    assert [pacer.offer(step(i), now=1.0) for i in range(3)] == [step(0), step(1), step(2)]
    assert pacer.deadline is None


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        ProgressPacer(-0.1)
