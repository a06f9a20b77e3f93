"""The pure ComfyUI → studio mapping: messages, history entries, progress, rejections."""

from __future__ import annotations

import struct

from agent.comfy import rejection
from agent.translate import Progress, failure_fields, history_outcome, nodes_to_run, output_files, parse_preview, short_message

from .harness import invert_scale


def test_failure_messages_keep_the_first_line_without_server_paths() -> None:
    text = "Error while loading /home/comfy/ComfyUI/models/checkpoints/x.safetensors: bad header\nTraceback ..."
    assert short_message(text) == "Error while loading x.safetensors: bad header"
    fields = failure_fields(
        {"node_id": "3", "exception_type": "comfy.model_management.OOM_EXCEPTION", "exception_message": "out of memory\nTIPS"},
        {"3": {"en": "Drawing", "zh": "绘制中"}},
    )
    assert fields == {
        "error_type": "OOM_EXCEPTION",
        "message": "out of memory",
        "graph_node": "3",
        "stage": "Drawing",
        "stage_alias": {"en": "Drawing", "zh": "绘制中"},
    }


def test_a_rejection_names_each_failing_node() -> None:
    exc = rejection(
        {
            "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""},
            "node_errors": {
                "3": {"class_type": "ImageScaleBy", "errors": [{"message": "Value bigger than max", "details": "scale_by: 100 > 8"}]}
            },
        },
        status=400,
    )
    assert exc.error_type == "prompt_outputs_failed_validation" and exc.graph_node == "3"
    assert str(exc) == "Prompt outputs failed validation; node 3 (ImageScaleBy): scale_by: 100 > 8"


def test_history_outcomes_come_from_the_status_messages() -> None:
    ok = {"status": {"status_str": "success", "messages": [["execution_start", {"timestamp": 1000}], ["execution_success", {"timestamp": 3500}]]}}
    assert (history_outcome(ok).status, history_outcome(ok).seconds) == ("success", 2.5)
    assert (history_outcome(ok).started_at, history_outcome(ok).ended_at) == (1.0, 3.5)  # ComfyUI's clock, seconds
    error = {"status": {"status_str": "error", "messages": [["execution_error", {"node_id": "2", "exception_type": "IndexError"}]]}}
    assert history_outcome(error).payload["exception_type"] == "IndexError"
    stopped = {"status": {"status_str": "error", "messages": [["execution_interrupted", {"node_id": "3"}]]}}
    assert history_outcome(stopped).status == "interrupted"
    assert history_outcome(stopped).ended_at is None  # no timestamp: the backend stamps the arrival


def test_overall_progress_counts_only_nodes_that_run() -> None:
    graph = {**invert_scale("x.png"), "9": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    progress = Progress(nodes_to_run(graph, ["4"]))
    assert progress.to_run == {"1", "2", "3", "4"}
    progress.cached(["1", "2"])
    progress.node_started("3")
    progress.node_step(5, 10)
    assert progress.fraction == 0.25
    progress.node_started("4")
    assert progress.fraction == 0.5


def test_output_files_and_preview_frames_are_decoded() -> None:
    ui = {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}], "animated": [True], "text": ["hi"]}
    assert [ref["filename"] for ref in output_files(ui)] == ["a.png"]
    header = b'{"prompt_id": "p-1"}'
    frame = struct.pack(">II", 4, len(header)) + header + b"PNG"
    assert parse_preview(frame).prompt_id == "p-1" and parse_preview(frame).image == b"PNG"  # type: ignore[union-attr]
    assert parse_preview(struct.pack(">II", 1, 2) + b"JPG").prompt_id is None  # type: ignore[union-attr]
    assert parse_preview(struct.pack(">I", 3) + b"\x00\x00\x00\x01") is None
