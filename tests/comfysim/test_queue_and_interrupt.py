"""Transcripts §16-§18 and §22: queue listing, delete/clear, interrupt, same-clientId reconnect."""

from __future__ import annotations

import requests

from .helpers import WAIT, WsClient, is_type, preview_graph, submit, text_to_image, types


def _slow(steps: int = 2000) -> dict:
    return text_to_image(steps=steps, prefix="slow")


def _wait_running(client, prompt_id):
    client.until(lambda m: is_type(m, "progress") and m["data"]["prompt_id"] == prompt_id)


def test_queue_delete_and_interrupt(demo_sim, ws_factory):
    sim = demo_sim
    agent = ws_factory(sim.url, "agent-q")
    slow = submit(sim.url, _slow(), agent.client_id).json()["prompt_id"]
    pending1 = submit(sim.url, preview_graph(color=1), agent.client_id).json()["prompt_id"]
    pending2 = submit(sim.url, preview_graph(color=2), agent.client_id).json()["prompt_id"]
    _wait_running(agent, slow)
    queue = requests.get(f"{sim.url}/queue", timeout=WAIT).json()
    assert [item[1] for item in queue["queue_running"]] == [slow]
    assert sorted(item[1] for item in queue["queue_pending"]) == sorted([pending1, pending2])
    assert queue["queue_running"][0][3] == {"client_id": "agent-q"} and queue["queue_running"][0][4] == ["9"]
    assert requests.get(f"{sim.url}/prompt", timeout=WAIT).json() == {"exec_info": {"queue_remaining": 3}}

    assert requests.post(f"{sim.url}/queue", json={"delete": [pending1, slow]}, timeout=WAIT).status_code == 200
    queue = requests.get(f"{sim.url}/queue", timeout=WAIT).json()
    assert [item[1] for item in queue["queue_running"]] == [slow]
    assert [item[1] for item in queue["queue_pending"]] == [pending2]

    assert requests.post(f"{sim.url}/interrupt", json={"prompt_id": pending2}, timeout=WAIT).status_code == 200
    assert requests.post(f"{sim.url}/interrupt", json={"prompt_id": slow}, timeout=WAIT).status_code == 200
    messages = agent.until_done(slow)
    interrupted = next(m for m in messages if is_type(m, "execution_interrupted"))["data"]
    assert set(interrupted) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert (interrupted["node_id"], interrupted["node_type"]) == ("3", "KSampler")
    assert types(messages)[-3:] == ["execution_interrupted", "status", "executing"]
    agent.until_done(pending2)
    history = requests.get(f"{sim.url}/history/{slow}", timeout=WAIT).json()[slow]
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1][0] == "execution_interrupted"
    assert requests.get(f"{sim.url}/history/{pending1}", timeout=WAIT).json() == {}


def test_clear_queue_leaves_running_prompt(demo_sim, ws_factory):
    sim = demo_sim
    agent = ws_factory(sim.url)
    running = submit(sim.url, _slow(40), agent.client_id).json()["prompt_id"]
    cleared = submit(sim.url, preview_graph(), agent.client_id).json()["prompt_id"]
    assert requests.post(f"{sim.url}/queue", json={"clear": True}, timeout=WAIT).status_code == 200
    assert requests.get(f"{sim.url}/queue", timeout=WAIT).json()["queue_pending"] == []
    messages = agent.until_done(running)
    assert any(is_type(m, "execution_success") for m in messages)
    assert requests.get(f"{sim.url}/history/{cleared}", timeout=WAIT).json() == {}


def test_interrupt_while_idle_does_nothing(sim, ws_factory):
    agent = ws_factory(sim.url)
    assert requests.post(f"{sim.url}/interrupt", timeout=WAIT).status_code == 200
    prompt_id = submit(sim.url, preview_graph(), agent.client_id).json()["prompt_id"]
    assert any(is_type(m, "execution_success") for m in agent.until_done(prompt_id))


def test_interrupt_without_client_id_is_broadcast(demo_sim, ws_factory):
    sim = demo_sim
    observer = ws_factory(sim.url)
    slow = submit(sim.url, _slow()).json()["prompt_id"]
    _wait_running(observer, slow)
    requests.post(f"{sim.url}/interrupt", timeout=WAIT)
    messages = observer.until_status(0)
    assert "execution_interrupted" in types(messages)
    assert "executing" not in types(messages)


def test_reconnect_with_same_client_id(demo_sim, ws_factory):
    sim = demo_sim
    old = ws_factory(sim.url, "agent-same")
    slow = submit(sim.url, _slow(), "agent-same").json()["prompt_id"]
    _wait_running(old, slow)
    new = WsClient(sim.url, "agent-same")
    first = new.recv()
    assert first["data"]["sid"] == "agent-same"
    assert new.recv() == {"type": "executing", "data": {"node": "3"}}
    requests.post(f"{sim.url}/interrupt", timeout=WAIT)
    assert any(is_type(m, "execution_interrupted") for m in new.until_done(slow))
    # The old socket is open but receives nothing once replaced (allowing for in-flight ones).
    drained = []
    try:
        while True:
            drained.append(old.recv(timeout=0.3))
    except Exception:  # noqa: BLE001 - the timeout ends the drain
        pass
    assert not any(is_type(m, "execution_interrupted") for m in drained)
    new.close()


def test_stale_socket_close_silences_the_new_socket(sim, ws_factory):
    a = WsClient(sim.url, "agent-x")
    a.recv()
    b = WsClient(sim.url, "agent-x")
    b.recv()
    a.close()
    # Bounded wait until the server has processed A's close (it pops agent-x's entry).
    probe = ws_factory(sim.url)
    for _ in range(50):
        prompt_id = submit(sim.url, preview_graph(color=len(_ * "x")), "agent-x").json()["prompt_id"]
        probe.until_status(0)
        try:
            b.recv(timeout=0.2)
        except Exception:  # noqa: BLE001 - silence is the expected outcome
            break
    assert requests.get(f"{sim.url}/history/{prompt_id}", timeout=WAIT).json()[prompt_id]["status"]["completed"]
    b.assert_silent()
    b.close()

    # Control: close first, then reconnect -> the full stream.
    c = WsClient(sim.url, "agent-y")
    c.recv()
    c.close()
    d = ws_factory(sim.url, "agent-y")
    prompt_id = submit(sim.url, preview_graph(color=77), "agent-y").json()["prompt_id"]
    assert types(d.until_done(prompt_id))[-1] == "executing"


def test_free_memory_drops_the_cache(sim, ws_factory):
    agent = ws_factory(sim.url)
    again = preview_graph()
    agent.until_done(submit(sim.url, again, agent.client_id).json()["prompt_id"])
    # The same graph with one more branch, held in its new node: the cache keeps 1 and 2.
    held = {**again, "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    sim.set_faults(hang_in_node="3")
    holding = submit(sim.url, held, agent.client_id).json()["prompt_id"]
    started = agent.until(lambda m: is_type(m, "executing") and m["data"]["node"] == "3")
    held_cached = next(m for m in started if is_type(m, "execution_cached"))
    assert held_cached["data"]["nodes"] == ["1", "2"]  # the cache was warm before /free
    # /free while a prompt runs: ComfyUI acts on it when that prompt ends, before the next.
    assert requests.post(f"{sim.url}/free", json={"unload_models": True, "free_memory": True}, timeout=WAIT).status_code == 200
    after = submit(sim.url, again, agent.client_id).json()["prompt_id"]
    sim.reset_faults()
    agent.until_done(holding)
    cached = next(m for m in agent.until_done(after) if is_type(m, "execution_cached"))
    assert cached["data"]["nodes"] == []
