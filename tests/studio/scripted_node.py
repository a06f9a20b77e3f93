"""A node played by the test: takes jobs from its queue and reports them exactly as an
agent does (lifecycle events to the backend, user events to the user), so the studio is
exercised end to end without ComfyUI. The prompt steers it: a prompt containing ``FAIL``
fails with an out-of-memory error, one containing ``HOLD`` waits for :meth:`release`.
"""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

from PIL import Image

from backend.messages import lifecycle, user_event
from backend.ports.bus import Delivery
from backend.ports.registry import NodeState
from backend.runtime import Backend
from tests.backend.nodes import library_capabilities


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 96)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


class ScriptedNode:
    def __init__(self, backend: Backend, node_id: str = "sim-1", *, slots: int = 2, steps: int = 5,
                 step_seconds: float = 0.06) -> None:
        self.backend, self.node_id, self.steps, self.step_seconds = backend, node_id, steps, step_seconds
        self._hold = threading.Event()
        backend.registry.set_capabilities(node_id, library_capabilities(backend.library))
        backend.registry.heartbeat(NodeState(node_id=node_id, online=True, slots=slots, simulated=True,
                                             label="Simulated node", vram_total_mb=24_000, vram_free_mb=20_000,
                                             caps_version="v1"), ttl=3600)
        self._sub = backend.bus.consume_jobs(node_id, self._on_job, prefetch=16)

    def release(self) -> None:
        self._hold.set()

    def stop(self) -> None:
        self._hold.set()
        self._sub.close()

    def _on_job(self, delivery: Delivery) -> None:
        message = delivery.body
        delivery.ack()
        threading.Thread(target=self._run, args=(message,), daemon=True).start()

    def _run(self, msg: dict[str, Any]) -> None:
        bus, blobs = self.backend.bus, self.backend.blobs

        def report(kind: str, **fields: Any) -> None:
            asset_kind = fields.pop("asset_kind", None)
            event = lifecycle(kind, job_id=msg["job_id"], attempt=msg["attempt"], node_id=self.node_id,  # type: ignore[arg-type]
                              **fields)
            if asset_kind:
                event["kind"] = asset_kind
            bus.publish_lifecycle(event)

        def tell(kind: str, **fields: Any) -> None:
            bus.publish_user_event(msg["user_id"], user_event(kind, msg["job_id"], **fields))

        text = json.dumps(msg["prompt"])
        report("submitted", prompt_id=msg["prompt_id"])
        report("started")
        if "HOLD" in text:
            self._hold.wait(60)
        stage_nodes = list(msg["stages"])
        total = len(stage_nodes) * self.steps
        done = 0
        for node in stage_nodes:
            tell("stage", node=node, alias=msg["stages"][node])
            for step in range(1, self.steps + 1):
                done += 1
                tell("progress", value=step, max=self.steps, fraction=done / total)
                time.sleep(self.step_seconds)
            if node == stage_nodes[len(stage_nodes) // 2]:
                preview = blobs.write_bytes(png((120, 120, 200), (48, 48)))
                event = user_event("preview", msg["job_id"], asset=preview.sha256)
                event["kind"] = "image"
                bus.publish_user_event(msg["user_id"], event)
            if "FAIL" in text and node == stage_nodes[-2]:
                report("failed", error_type="OutOfMemory", message="CUDA out of memory", stage=msg["stages"][node]["en"])
                return
        seed = int(msg["prompt"].get("3", {}).get("inputs", {}).get("seed", 7)) if isinstance(msg["prompt"], dict) else 7
        data = png(((seed * 37) % 256, (seed * 91) % 256, 160))
        ref = blobs.write_bytes(data)
        report("output", asset=ref.sha256, node=msg["output_nodes"][0], position=0, asset_kind="image", format="PNG",
               size=ref.size, width=96, height=96)
        report("succeeded", seconds=1.0)
