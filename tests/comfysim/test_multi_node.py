"""Many simulated nodes in one process, with jobs in flight on all of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from comfysim import DEMO_MODELS, SimConfig, start_sims

from .helpers import WAIT, WsClient, is_type, submit, text_to_image
from .test_faults import _free_port, _wait_http

ROOT = Path(__file__).resolve().parents[2]


def test_eight_nodes_in_one_thread_run_jobs_concurrently():
    config = SimConfig(models={"checkpoints": DEMO_MODELS["checkpoints"]}, step_seconds=0.01)
    with start_sims(8, config) as cluster:
        assert len(set(cluster.urls)) == 8
        clients, prompt_ids = [], []
        for index, url in enumerate(cluster.urls):
            client = WsClient(url)
            client.recv()
            clients.append(client)
            prompt_ids.append(submit(url, text_to_image(seed=index, steps=20), client.client_id).json()["prompt_id"])
        running = [requests.get(f"{url}/queue", timeout=WAIT).json()["queue_running"] for url in cluster.urls]
        assert sum(len(r) for r in running) >= 6  # nearly all nodes busy at the same time
        for client, prompt_id in zip(clients, prompt_ids):
            assert any(is_type(m, "execution_success") for m in client.until_done(prompt_id, timeout=30))
            client.close()


@pytest.mark.slow
def test_cli_serves_several_nodes(tmp_path):
    base = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfysim", "--nodes", "3", "--base-port", str(base), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for offset in range(3):
            _wait_http(f"http://127.0.0.1:{base + offset}", proc)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["node-0", "node-1", "node-2"]
        proc.terminate()
        assert proc.wait(timeout=WAIT) == 0
    finally:
        proc.kill()
        proc.wait()
