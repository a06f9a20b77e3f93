"""A job's event stream over HTTP, embedded and distributed, while the job is held on the
simulated node: progress is seen before the end, and a stream that broke off resumes
after its ``Last-Event-ID``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.waiting import wait_for

from .conftest import Api, Stream, Studio

@pytest.fixture
def held_at_sampler(studio: Studio) -> Iterator[tuple[Api, str]]:
    """A text-to-image job held at its sampler (the studio's simulated node), so a stream
    can be opened before it makes progress; the faults are cleared afterwards."""
    studio.server.faults(hang_in_node="KSampler")
    try:
        api = studio.user()
        r = api.submit({"workflow": "txt2img-sd15", "params": {"prompt": "a lighthouse at dusk", "steps": 12},
                        "queue_if_busy": True})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] == "running", 60, "the job at the sampler")
        yield api, job_id
    finally:
        studio.server.reset_faults()


def test_progress_is_streamed_while_the_job_runs(studio: Studio, held_at_sampler: tuple[Api, str]) -> None:
    api, job_id = held_at_sampler
    stream = Stream(api, job_id)
    try:
        first = stream.until(lambda m, _: m[1] == "state")
        assert first[-1][2]["state"] == "running"
        studio.server.faults(hang_in_node="VAEDecode")  # the sampler runs its steps; the decoder holds
        seen = stream.until(lambda m, _: m[1] == "progress" and m[2]["max"] == 12)  # a sampler step
        assert 0 < seen[-1][2]["value"] <= 12, seen
        assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "running", "progress came while the job was held"
        studio.server.reset_faults()
        rest = stream.until(lambda m, _: m[1] == "end")
        assert rest[-1][2]["state"] == "succeeded" and rest[-1][2]["outputs"], rest[-1]
    finally:
        stream.close()


def test_a_stream_resumes_after_its_last_event_id(studio: Studio, held_at_sampler: tuple[Api, str]) -> None:
    api, job_id = held_at_sampler
    first = Stream(api, job_id)
    try:
        first.until(lambda m, _: m[1] == "state")
        studio.server.faults(hang_in_node="VAEDecode")
        had = first.until(lambda m, _: m[1] == "stage" and m[2]["graph_node"] == "8")  # the decoder started: held
    finally:
        first.close()  # the connection breaks
    numbered = [m for m in had if m[0] is not None]
    ids = [m[0] for m in numbered]
    assert len(numbered) >= 3 and ids == sorted(set(ids)), had  # sampler stage, its progress, decoder stage
    assert {m[1] for m in numbered} >= {"stage", "progress"} and all(m[1] != "state" for m in numbered)

    resume_after = numbered[0][0]
    assert resume_after is not None
    again = Stream(api, job_id, last_event_id=resume_after)
    try:
        head = again.until(lambda m, _: m[1] == "state")
        assert len(head) == 1 and head[0][0] is None, "the job's record comes first, without a number"
        replayed = again.until(lambda m, seen: m[0] == ids[-1])
        assert replayed == numbered[1:], "exactly the events after the last one the client had, in order"
        studio.server.reset_faults()
        rest = again.until(lambda m, _: m[1] == "end")
        assert all(m[0] is None or m[0] > ids[-1] for m in rest), rest
        assert rest[-1][2]["state"] == "succeeded"
    finally:
        again.close()
