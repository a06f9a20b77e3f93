"""Every fault can be switched on and observed; the exit fault kills a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import websocket

from ..waiting import wait_for
from .helpers import WAIT, WsClient, free_port, is_type, png_bytes, preview_graph, submit, text_to_image, upload, wait_http

ROOT = Path(__file__).resolve().parents[2]


def test_faults_are_off_by_default_and_unknown_names_rejected(sim):
    faults = requests.get(f"{sim.url}/sim/faults", timeout=WAIT).json()
    assert faults == {
        "raise_in_node": None,
        "hang_in_node": None,
        "exit_at_step": None,
        "ws_silent": False,
        "upload_delay": 0.0,
        "refuse_uploads": False,
        "http_delay": 0.0,
    }
    response = requests.post(f"{sim.url}/sim/faults", json={"melt_gpu": True}, timeout=WAIT)
    assert response.status_code == 400 and "melt_gpu" in response.json()["error"]
    assert requests.get(f"{sim.url}/api/sim/faults", timeout=WAIT).status_code == 404


def test_raise_in_node(sim, ws_factory):
    agent = ws_factory(sim.url)
    requests.post(f"{sim.url}/sim/faults", json={"raise_in_node": "PreviewImage"}, timeout=WAIT)
    prompt_id = submit(sim.url, preview_graph(), agent.client_id).json()["prompt_id"]
    error = next(m for m in agent.until_done(prompt_id) if is_type(m, "execution_error"))["data"]
    assert error["node_id"] == "2" and error["exception_type"] == "comfysim.errors.InjectedFault"
    requests.delete(f"{sim.url}/sim/faults", timeout=WAIT)
    prompt_id = submit(sim.url, preview_graph(color=3), agent.client_id).json()["prompt_id"]
    assert any(is_type(m, "execution_success") for m in agent.until_done(prompt_id))


def test_hang_ignores_interrupt_until_cleared(sim, ws_factory):
    agent = ws_factory(sim.url)
    sim.set_faults(hang_in_node="1")
    prompt_id = submit(sim.url, preview_graph(), agent.client_id).json()["prompt_id"]
    agent.until(lambda m: is_type(m, "executing") and m["data"]["node"] == "1")
    requests.post(f"{sim.url}/interrupt", timeout=WAIT)
    agent.assert_silent(0.3)
    sim.reset_faults()
    messages = agent.until_done(prompt_id)
    # The interrupt lands at the next node start, as ComfyUI's cooperative interrupt does.
    assert any(is_type(m, "execution_interrupted") and m["data"]["node_id"] == "2" for m in messages)


def test_ws_silent_and_close_websockets(sim, ws_factory):
    agent = ws_factory(sim.url)
    sim.set_faults(ws_silent=True)
    prompt_id = submit(sim.url, preview_graph(), agent.client_id).json()["prompt_id"]
    wait_for(lambda: requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json().get(prompt_id), WAIT * 3,
             "the prompt to finish")
    agent.assert_silent(0.5)  # it ran to the end, and its messages would have been sent by now
    assert agent.ws.connected
    sim.reset_faults()
    requests.post(f"{sim.url}/sim/faults", json={"close_websockets": True}, timeout=WAIT)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        agent.recv(timeout=2)


def test_upload_faults_and_slow_http(sim):
    sim.set_faults(refuse_uploads=True)
    assert upload(sim.url, "a.png", png_bytes()).status_code == 500
    sim.set_faults(refuse_uploads=False, upload_delay=0.3)
    started = time.monotonic()
    assert upload(sim.url, "a.png", png_bytes()).status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.set_faults(upload_delay=0.0, http_delay=0.3)
    started = time.monotonic()
    assert requests.get(f"{sim.url}/queue", timeout=WAIT).status_code == 200
    assert time.monotonic() - started >= 0.3
    # The fault endpoint itself is never delayed, or a test could not switch the delay off:
    # with an hour's delay it still answers (well within the client's timeout).
    sim.set_faults(http_delay=3600.0)
    assert requests.get(f"{sim.url}/sim/faults", timeout=WAIT).json()["http_delay"] == 3600.0
    assert requests.delete(f"{sim.url}/sim/faults", timeout=WAIT).status_code == 200


def test_exit_at_step_kills_the_process(tmp_path):
    port = free_port()
    config = tmp_path / "sim.toml"
    config.write_text('preset = "demo"\nstep_seconds = 0.01\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfysim", "--port", str(port), "--config", str(config), "--fault-exit-at-step", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url, proc)
        agent = WsClient(url)
        agent.recv()
        submit(url, text_to_image(steps=10), agent.client_id)
        progress = []
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while True:
                message = agent.recv(timeout=WAIT)
                if is_type(message, "progress"):
                    progress.append(message["data"]["value"])
        assert progress == [1, 2]
        assert proc.wait(timeout=WAIT) == 3
    finally:
        proc.kill()
        proc.wait()
