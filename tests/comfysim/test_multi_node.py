"""Many simulated nodes in one process, with jobs in flight on all of them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from comfysim import DEMO_MODELS, SimConfig, start_sims

from ..waiting import wait_for
from .helpers import WAIT, WsClient, free_port, is_type, submit, text_to_image, wait_http

ROOT = Path(__file__).resolve().parents[2]


def test_eight_nodes_in_one_thread_run_jobs_concurrently():
    config = SimConfig(models={"checkpoints": DEMO_MODELS["checkpoints"]}, step_seconds=0.01)
    with start_sims(8, config) as cluster:
        assert len(set(cluster.urls)) == 8
        for node in cluster.nodes:
            node.set_faults(hang_in_node="KSampler")  # each job holds its node until released
        clients, prompt_ids = [], []
        for index, url in enumerate(cluster.urls):
            client = WsClient(url)
            client.recv()
            clients.append(client)
            prompt_ids.append(submit(url, text_to_image(seed=index, steps=20), client.client_id).json()["prompt_id"])

        def running() -> list[str]:
            return [i[1] for url in cluster.urls for i in requests.get(f"{url}/queue", timeout=WAIT).json()["queue_running"]]

        wait_for(lambda: sorted(running()) == sorted(prompt_ids), 60, "every node running its job at once")
        for node in cluster.nodes:
            node.reset_faults()
        for client, prompt_id in zip(clients, prompt_ids):
            assert any(is_type(m, "execution_success") for m in client.until_done(prompt_id, timeout=30))
            client.close()


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now (others on the machine
    take ports too: a free first port says nothing of the next ones)."""
    while True:
        base = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(base + 1, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base


@pytest.mark.slow
def test_cli_serves_several_nodes(tmp_path):
    base = free_ports_in_a_row(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfysim", "--nodes", "3", "--base-port", str(base), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for offset in range(3):
            wait_http(f"http://127.0.0.1:{base + offset}", proc)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["node-0", "node-1", "node-2"]
        proc.terminate()
        assert proc.wait(timeout=WAIT) == 0
    finally:
        proc.kill()
        proc.wait()
