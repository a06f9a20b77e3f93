"""Each benchmark runs end to end at a tiny size and prints its figures (no timing is
asserted: benchmarks measure, tests check they still run). They use the real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cluster, common, event_path, recovery, submit_path, uploads

from .. import s3server, services


@pytest.fixture(autouse=True)
def servers() -> None:
    services.require("PostgreSQL", "127.0.0.1", 5432)
    services.require("Redis", "127.0.0.1", 6379)
    services.require("RabbitMQ", "127.0.0.1", 5672)


def test_submit_path_runs(capsys: pytest.CaptureFixture[str]) -> None:
    figures = submit_path.main(["--runs", "1", "--nodes", "1", "--latency-jobs", "5", "--rate", "20",
                                "--throughput-jobs", "8", "--clients", "2", "--depth", "8", "--no-write"])
    assert figures["p50"] > 0 and figures["rate"] > 0 and figures["bare_p50"] > 0
    assert "submit → consumed by agent, p50" in capsys.readouterr().out


def test_event_path_runs(capsys: pytest.CaptureFixture[str]) -> None:
    figures = event_path.main(["--runs", "1", "--nodes", "1", "--rate", "100", "--seconds", "0.5", "--no-write"])
    assert figures["p50"] > 0
    assert "comfysim event → studio consumer, p99" in capsys.readouterr().out


def test_cluster_runs(capsys: pytest.CaptureFixture[str]) -> None:
    ratios = cluster.main(["--jobs", "12", "--nodes", "2", "--min-seconds", "0.05", "--cap-seconds", "0.3",
                           "--burst-gap", "0.2", "--clients", "2", "--no-write"])
    assert set(ratios) == {"ours", "round-robin", "fewest"} and all(r > 0 for r in ratios.values())
    assert "round-robin" in capsys.readouterr().out


def test_uploads_runs(capsys: pytest.CaptureFixture[str]) -> None:
    s3server.require()
    figures = uploads.main(["--mb", "0.3", "--repeats", "1", "--no-write"])
    assert figures["again"] == 0 and figures["ratio"] > 0
    assert figures["again_s3"] == 0 and figures["s3_mb_s"] > 0
    assert "s3 draw again" in capsys.readouterr().out


def test_a_section_is_replaced_and_the_others_kept(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    common.write_section("a", "first A", path=doc)
    common.write_section("b", "only B", path=doc)
    common.write_section("a", "second A", path=doc)
    text = doc.read_text()
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.index("second A") < text.index("only B")


def test_percentiles() -> None:
    assert common.percentile([1, 2, 3, 4, 5], 50) == 3
    assert common.percentile([1.0, 2.0], 50) == 1.5
    assert common.percentile([7.0], 99) == 7.0


def test_recovery_runs(capsys: pytest.CaptureFixture[str]) -> None:
    medians = recovery.main(["--runs", "1", "--no-write"])
    assert set(medians) == {"ComfyUI stops", "the agent is killed"}
    assert all(0 < figures["offline"] <= figures["moved"] for figures in medians.values())
    assert "waiting job finished on the other node" in capsys.readouterr().out
def test_reconnect_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import reconnect

    from .. import private_servers

    private_servers.require("postgres")
    figures = reconnect.main(["--transactions", "20", "--runs", "1", "--threads", "3", "--no-write"])
    assert figures["ping_p50"] > 0 and figures["restart"]["pre_ping"]["failed"] == 0
    assert "after a restart: transactions failed" in capsys.readouterr().out


def test_dispatch_pass_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import dispatch_pass

    figures = dispatch_pass.main(["--jobs", "60", "--short-jobs", "20", "--nodes", "4", "--slots", "2", "--few", "2",
                                  "--repeats", "1", "--no-write"])
    assert set(figures) == {"all free", "few free", "short backlog"} and all(x > 0 for x in figures.values())
    assert "per placed job" in capsys.readouterr().out


def test_scaling_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import scaling

    results = scaling.main(["--nodes", "2", "--jobs-per-node", "3", "--min-seconds", "0.05", "--cap-seconds", "0.2",
                            "--burst-gap", "0.2", "--clients", "2", "--hosts", "2", "--no-write"])  # one node per host process
    assert results[2]["ratio"] > 0 and results[2]["failed"] == 0 and results[2]["submit"][0] > 0
    assert "`submit()` p50 / p99" in capsys.readouterr().out


@pytest.mark.parametrize("db", ["postgres", "sqlite"])
def test_lifecycle_runs(capsys: pytest.CaptureFixture[str], db: str) -> None:
    from bench import lifecycle

    rates = lifecycle.main(["--jobs", "6", "--appliers", "1,3", "--repeats", "1", "--db", db, "--no-write"])
    assert set(rates) == {1, 3} and all(rate > 0 for rate in rates.values())
    assert "events applied/s" in capsys.readouterr().out
