"""Benchmark 5 (studio sessions) runs end to end at a tiny size and prints its figures
(no timing or memory is asserted: benchmarks measure, tests check they still run). It
starts ``run_studio.py`` in embedded mode, so it needs no external server."""

from __future__ import annotations

import pytest

from bench import studio_sessions


def test_studio_sessions_runs(capsys: pytest.CaptureFixture[str]) -> None:
    figures = studio_sessions.main(["--sessions", "3", "--nodes", "2", "--settle", "1", "--no-write"])
    assert figures["errors"] == [] and figures["watching"] == 3
    assert figures["states"] == {"succeeded": 3}
    assert len(figures["end"]) == 3 and figures["watch_rss"] > 0
    out = capsys.readouterr().out
    assert "studio process RSS while all sessions watch" in out and "event → browser, p99" in out
