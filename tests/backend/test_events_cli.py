"""``python -m backend events dead-letters|replay|discard`` against RabbitMQ (a private prefix
on the machine's broker, deleted afterwards), and its answer in embedded mode."""

from __future__ import annotations

import io
import json
import queue
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.cli import main
from backend.ports.bus import Delivery
from backend.ports.rabbitmq import RabbitBus

from .. import services


@pytest.fixture
def rabbit() -> Iterator[RabbitBus]:
    with services.rabbit_bus() as bus:
        yield bus


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def run(*argv: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _set_aside(bus: RabbitBus, bodies: list[dict]) -> None:
    got: queue.Queue[Delivery] = queue.Queue()
    sub = bus.consume_lifecycle(got.put)
    for body in bodies:
        bus.publish_lifecycle(body)
        got.get(timeout=10).dead_letter(f"NotFound: no stored file for {body['job_id']}")
    sub.close()


def test_list_replay_and_discard_dead_letters(rabbit: RabbitBus, monkeypatch, capsys, tmp_path: Path) -> None:
    cli = _cli(monkeypatch, capsys, tmp_path, {"STUDIO_AMQP_URL": services.AMQP_URL, "STUDIO_BUS_PREFIX": rabbit.prefix})
    _set_aside(rabbit, [{"job_id": "j1", "type": "output", "node_id": "gpu-1"}, {"job_id": "j2", "type": "output"}])

    code, out, _ = cli("--json", "events", "dead-letters")
    listed = json.loads(out)
    assert code == 0 and [(d["job_id"], d["type"], d["queue"]) for d in listed] == [("j1", "output", "lifecycle"),
                                                                                 ("j2", "output", "lifecycle")]
    assert listed[0]["reason"] == "NotFound: no stored file for j1" and listed[0]["node_id"] == "gpu-1"
    code, out, _ = cli("events", "dead-letters")
    assert code == 0 and listed[0]["id"] in out and "NotFound: no stored file for j1" in out

    code, _, err = cli("events", "replay")
    assert code == 2 and "--all" in err  # neither ids nor --all: nothing happens by accident
    code, out, _ = cli("events", "replay", listed[0]["id"], "nope")
    assert code == 1 and "replayed 1" in out and "not found: nope" in out
    code, out, _ = cli("events", "discard", listed[1]["id"])
    assert code == 0 and "discarded 1" in out
    assert rabbit.dead_letters() == []

    got: queue.Queue[Delivery] = queue.Queue()
    rabbit.consume_lifecycle(got.put)
    replayed = got.get(timeout=10)
    assert replayed.body == {"job_id": "j1", "type": "output", "node_id": "gpu-1"}
    replayed.ack()
    with pytest.raises(queue.Empty):
        got.get(timeout=0.3)


def test_embedded_mode_points_to_the_admin_page(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.delenv("STUDIO_AMQP_URL", raising=False)
    cli = _cli(monkeypatch, capsys, tmp_path, {})
    code, out, err = cli("events", "dead-letters")
    assert code == 2 and out == "" and "Admin page" in err
