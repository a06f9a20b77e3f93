"""Two details checked against a real ComfyUI 0.3.64: the order in which ready nodes run
(``comfy_execution/graph.py``: ``ExecutionList.add_node`` and ``ux_friendly_pick_node``), and
the extra ``status`` ComfyUI broadcasts when a delete empties its queue
(``PromptQueue.delete_queue_item`` calls ``wipe_queue``, which announces it too)."""

from __future__ import annotations

import requests

from .helpers import WAIT, is_type, preview_graph, submit, text_to_image


def _executed_nodes(messages: list) -> list[str]:
    return [m["data"]["node"] for m in messages if is_type(m, "executing") and m["data"]["node"] is not None]


def test_ready_nodes_run_in_comfyuis_order(demo_sim, ws_factory):
    ws = ws_factory(demo_sim.url)
    first = submit(demo_sim.url, text_to_image(seed=1), ws.client_id).json()["prompt_id"]
    # Fresh: the checkpoint first (an output waits for it through VAEDecode), then the
    # latent (first ready in visiting order), then the negative encoder 7 before 6.
    assert _executed_nodes(ws.until_done(first)) == ["4", "5", "7", "6", "3", "8", "9"]

    warm = text_to_image(seed=2)
    warm["6"]["inputs"]["text"], warm["7"]["inputs"]["text"] = "a harbour", "noisy"
    second = submit(demo_sim.url, warm, ws.client_id).json()["prompt_id"]
    messages = ws.until_done(second)
    cached = next(m for m in messages if is_type(m, "execution_cached"))["data"]["nodes"]
    assert sorted(cached) == ["4", "5"]
    assert _executed_nodes(messages) == ["7", "6", "3", "8", "9"]  # after a warm-up: 7 before 6


def test_an_output_node_that_is_ready_runs_before_other_ready_nodes(demo_sim, ws_factory):
    graph = {**text_to_image(), **{k: v for k, v in preview_graph(color=3).items()}}
    # preview_graph's nodes are "1" (EmptyImage) and "2" (PreviewImage): independent of the
    # sampler branch; its PreviewImage becomes ready right after its input.
    ws = ws_factory(demo_sim.url)
    prompt_id = submit(demo_sim.url, graph, ws.client_id).json()["prompt_id"]
    order = _executed_nodes(ws.until_done(prompt_id))
    assert order.index("2") == order.index("1") + 1, order
    assert sorted(order) == sorted(graph), order


def _statuses(messages: list) -> list[int]:
    return [m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if is_type(m, "status")]


def test_deleting_the_last_pending_prompt_announces_it_twice(demo_sim, ws_factory):
    url = demo_sim.url
    observer = ws_factory(url)  # its first status (with sid) is read already
    agent = ws_factory(url)
    slow = submit(url, text_to_image(steps=2000, prefix="slow"), agent.client_id).json()["prompt_id"]
    # Taking the prompt off the queue announces it too (before execution_start); the
    # others are sent only once it runs, or a loaded machine orders the news differently.
    started = agent.until(lambda m: is_type(m, "execution_start"))
    pending = [submit(url, preview_graph(color=c), agent.client_id).json()["prompt_id"] for c in (1, 2)]
    assert _statuses(observer.until_status(3)) == [1, 1, 2, 3]

    requests.post(f"{url}/queue", json={"delete": [pending[0]]}, timeout=WAIT).raise_for_status()
    assert _statuses(observer.until_status(2)) == [2]  # one of two: announced once
    requests.post(f"{url}/queue", json={"delete": [pending[1]]}, timeout=WAIT).raise_for_status()
    assert _statuses(observer.until_status(1)) == [1]
    assert _statuses(observer.until_status(1)) == [1]  # the last one: announced twice

    requests.post(f"{url}/interrupt", json={"prompt_id": slow}, timeout=WAIT).raise_for_status()
    assert [m["type"] for m in observer.until_status(0)] == ["status"]  # the interrupt is the owner's news
    owner = started + agent.until_done(slow)
    assert [m["type"] for m in owner[-3:]] == ["execution_interrupted", "status", "executing"]
    assert _statuses(owner) == [1, 1, 2, 3, 2, 1, 1, 0]
