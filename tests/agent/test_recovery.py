"""The agent after crashes: its journal, adoption by a restarted agent, orphaned prompts in
ComfyUI's queue, and a registry that lost its data."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.journal import Journal
from backend.jobs.messages import upload_name
from comfysim import SimHandle

from .harness import NODE, STAGES, Harness, image_upload, invert_scale, job_message


def _count_posts(sim: SimHandle) -> collections.Counter[str]:
    """How often each prompt id was queued on the sim (POST /prompt reaching the queue)."""
    counts: collections.Counter[str] = collections.Counter()
    queue = sim.node.queue
    put = queue.put

    def counting_put(item: Any) -> None:
        counts[item.prompt_id] += 1
        put(item)

    queue.put = counting_put  # type: ignore[method-assign]
    return counts


def _job(harness: Harness, prefix: str, color: tuple[int, int, int] = (10, 200, 30)) -> dict[str, Any]:
    asset = harness.store_image(color=color)
    return job_message(invert_scale(upload_name(asset), prefix=prefix), uploads=[image_upload(asset)], stages=STAGES)


def _hang_running_and_pending(sim: SimHandle, harness: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    sim.set_faults(hang_in_node="ImageScaleBy")
    running = harness.dispatch(_job(harness, "running"))
    harness.wait_until(lambda: any(e["graph_node"] == "3" for e in harness.user_events(running["job_id"], "stage")), what="hung job")
    pending = harness.dispatch(_job(harness, "pending", color=(1, 2, 3)))
    harness.wait_event(pending["job_id"], "submitted")
    return running, pending


def _queue(sim: SimHandle) -> tuple[set[str], set[str]]:
    data = requests.get(f"{sim.url}/queue", timeout=5).json()
    return {i[1] for i in data["queue_running"]}, {i[1] for i in data["queue_pending"]}


def _history(sim: SimHandle, prompt_id: str) -> dict[str, Any]:
    return requests.get(f"{sim.url}/history/{prompt_id}", timeout=5).json().get(prompt_id) or {}


def test_the_journal_round_trips_and_discards_what_it_cannot_read(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "node")
    assert journal.entries() == []
    first, second = job_message({"1": {}}), job_message({"2": {}})
    journal.write(first)
    journal.write(second)
    journal.write(first, started=True)  # an update replaces the entry
    entries = {e.prompt_id: e for e in journal.entries()}
    assert set(entries) == {first["prompt_id"], second["prompt_id"]}
    assert entries[first["prompt_id"]].started and not entries[second["prompt_id"]].started
    assert entries[first["prompt_id"]].message == first
    (tmp_path / "node" / "garbage.json").write_text("{not json")
    (tmp_path / "node" / ".tmp-x.json").write_text("{}")  # a write that never got renamed
    (tmp_path / "node" / "other.json").write_text(json.dumps({"message": second}))  # misnamed
    assert len(journal.entries()) == 2
    assert sorted(p.name for p in (tmp_path / "node").iterdir()) == sorted(f"{e}.json" for e in entries)
    journal.remove(first["prompt_id"])
    journal.remove(first["prompt_id"])  # twice is fine
    assert [e.prompt_id for e in journal.entries()] == [second["prompt_id"]]
    # A prompt id that is not a safe file name still gets its own file inside the folder.
    odd = dict(job_message({}), prompt_id="../../etc/passwd-1")
    journal.write(odd)  # type: ignore[arg-type]
    assert {e.prompt_id for e in journal.entries()} == {second["prompt_id"], "../../etc/passwd-1"}
    assert all(p.parent == tmp_path / "node" for p in (tmp_path / "node").iterdir())


def test_a_restarted_agent_adopts_its_jobs_and_runs_nothing_twice(sim: SimHandle, harness: Harness) -> None:
    posts = _count_posts(sim)
    running, pending = _hang_running_and_pending(sim, harness)
    journal = harness.agent.runner.journal
    assert {e.prompt_id: e.started for e in journal.entries()} == {running["prompt_id"]: True, pending["prompt_id"]: False}

    harness.restart()  # the new agent knows the jobs only from its journal
    assert set(harness.agent.runner.active()) == {running["prompt_id"], pending["prompt_id"]}
    sim.reset_faults()
    assert harness.wait_end(running["job_id"])["type"] == "succeeded"
    assert harness.wait_end(pending["job_id"])["type"] == "succeeded"
    assert harness.types(running["job_id"]) == ["submitted", "started", "output", "succeeded"]
    assert harness.types(pending["job_id"])[-1] == "succeeded" and harness.types(pending["job_id"]).count("succeeded") == 1
    assert posts == {running["prompt_id"]: 1, pending["prompt_id"]: 1}
    harness.wait_until(lambda: not journal.entries(), what="journal emptied")


def test_a_redelivery_after_a_restart_is_not_submitted_again(sim: SimHandle, harness: Harness) -> None:
    posts = _count_posts(sim)
    running, _ = _hang_running_and_pending(sim, harness)
    harness.restart()
    harness.bus.publish_job(NODE, running)  # the same message again (e.g. its ack was lost)
    harness.wait_until(lambda: len(harness.events(running["job_id"], "submitted")) == 2, what="submitted confirmed again")
    sim.reset_faults()
    assert harness.wait_end(running["job_id"])["type"] == "succeeded"
    assert posts[running["prompt_id"]] == 1


def _killed_before_its_post(harness: Harness, job: dict[str, Any]) -> None:
    """What an agent killed after journaling ``job`` but before POSTing it leaves: the
    journal entry, the slot held. Call with the agent stopped."""
    harness.registry.restore(NODE, {job["prompt_id"]: job["estimate_seconds"]})
    harness.agent.runner.journal.write(job)


def test_a_copy_of_a_job_the_restarted_agent_requeued_is_not_submitted(
    sim: SimHandle, harness: Harness, caplog: pytest.LogCaptureFixture,
) -> None:
    """The restarted agent finds the journaled job missing from ComfyUI and sends it back to
    the backlog. A copy of its message that arrives later (the broker's redelivery, the
    sweeper's republish) while the backend still holds the slot must not run it: the
    backend may already have given the job to another node (a chaos run saw it run twice)."""
    caplog.set_level(logging.INFO, logger="agent")
    posts = _count_posts(sim)
    job = _job(harness, "killed")
    harness.restart(before_start=lambda: _killed_before_its_post(harness, job))
    assert harness.wait_end(job["job_id"])["type"] == "requeue"
    harness.registry.restore(NODE, {job["prompt_id"]: job["estimate_seconds"]})  # the backend has not freed it yet
    harness.bus.publish_job(NODE, job)
    harness.wait_until(lambda: "; dropped" in caplog.text or posts[job["prompt_id"]], what="the copy settled")
    assert posts[job["prompt_id"]] == 0
    assert harness.types(job["job_id"]) == ["requeue"]


def test_journaled_jobs_whose_slot_was_released_are_dropped_and_stopped(sim: SimHandle, harness: Harness) -> None:
    running, pending = _hang_running_and_pending(sim, harness)

    def moved_elsewhere() -> None:  # what the sweeper does while the agent is away
        harness.registry.release(NODE, running["prompt_id"])
        harness.registry.release(NODE, pending["prompt_id"])

    harness.restart(before_start=moved_elsewhere)
    assert harness.agent.runner.active() == {}
    assert harness.agent.runner.journal.entries() == []
    harness.wait_until(lambda: _queue(sim)[1] == set(), what="pending prompt deleted")
    sim.reset_faults()  # the interrupt lands when the hung node returns
    entry = harness.wait_until(lambda: _history(sim, running["prompt_id"]), what="interrupted entry")
    assert entry["status"]["status_str"] == "error"
    assert not _history(sim, pending["prompt_id"])
    assert harness.types(running["job_id"]) == ["submitted", "started"]
    assert harness.types(pending["job_id"]) == ["submitted"]


def test_orphaned_prompts_are_removed_after_a_reconnect(sim: SimHandle, harness: Harness) -> None:
    sim.set_faults(hang_in_node="ImageScaleBy")
    asset = harness.store_image()
    graph = invert_scale(upload_name(asset), prefix="orphan")
    requests.post(f"{sim.url}/upload/image", files={"image": (asset + ".png", harness.blobs.path(asset).read_bytes())},
                  data={"subfolder": "studio"}, timeout=5).raise_for_status()
    # Prompts of ours nobody here follows: one runs, one waits; one of them is still held
    # here (a redelivery will adopt it) and must stay; a foreign prompt must stay too.
    ours_running, ours_pending, held, foreign = "deadbeef01-1", "deadbeef02-2", "deadbeef03-1", "someone-elses-prompt"
    for prompt_id in (ours_running, ours_pending, held, foreign):
        body = {"prompt": graph, "prompt_id": prompt_id}
        requests.post(f"{sim.url}/prompt", json=body, timeout=5).raise_for_status()
    harness.registry.restore(NODE, {held: 1.0})
    harness.wait_until(lambda: ours_running in _queue(sim)[0], what="orphan running")
    sim.close_websockets()  # a new session: the agent looks for orphans
    harness.wait_until(lambda: _queue(sim)[1] == {held, foreign}, what="pending orphan deleted")
    sim.reset_faults()
    entry = harness.wait_until(lambda: _history(sim, ours_running), what="running orphan interrupted")
    assert entry["status"]["status_str"] == "error"
    harness.wait_until(lambda: _history(sim, held) and _history(sim, foreign), what="the others ran")
    assert harness.lifecycle == []  # nothing reported for prompts it does not follow


def _flush(harness: Harness) -> None:
    """What a Redis restart without persistence does to the registry."""
    registry = harness.registry
    with registry._lock:
        registry._states.clear()
        registry._caps.clear()
        registry._reservations.clear()


def test_a_registry_that_lost_its_data_gets_the_capabilities_back_and_cancels_nothing(sim: SimHandle, harness: Harness) -> None:
    running, pending = _hang_running_and_pending(sim, harness)
    _flush(harness)
    harness.wait_until(lambda: harness.registry.capabilities(NODE) is not None, what="capabilities published again")
    harness.wait_until(lambda: harness.registry.nodes(), what="node state back")
    # The sweeper restores the reservations from the database within its grace period.
    harness.registry.restore(NODE, {running["prompt_id"]: 1.0, pending["prompt_id"]: 1.0})
    sim.reset_faults()
    assert harness.wait_end(running["job_id"])["type"] == "succeeded"
    assert harness.wait_end(pending["job_id"])["type"] == "succeeded"
