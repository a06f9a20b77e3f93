"""A studio-in-miniature around one agent: the in-process bus and registry, a blob store in
a temp dir and a comfysim node; collects every lifecycle and user event for assertions.

Waits are bounded and event-driven (a condition variable), never blind sleeps.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from agent import Agent, AgentConfig
from backend.assets.blobs import LocalBlobStore
from backend.jobs.messages import prompt_id_of, upload_name
from backend.ports.bus import Delivery
from backend.ports.memory_bus import MemoryBus
from backend.ports.memory_registry import MemoryRegistry
from backend.ports.registry import Candidate

NODE = "gpu-1"
USER = 7
#: Ceiling for every wait: reached only when the awaited event never comes, so it is
#: generous enough for a loaded machine.
WAIT = 60.0

#: Short timings so faults resolve within a second or two.
FAST = dict(
    heartbeat_interval=0.3,
    state_ttl=1.5,
    silence_timeout=1.0,
    poll_interval=0.2,
    reconnect_min=0.1,
    reconnect_max=0.4,
    ping_interval=1.0,
    ping_timeout=2.0,
    health_timeout=1.0,
    http_timeout=3.0,
)

#: For tests of what the websocket carries (stages, steps, previews): the socket is not
#: given up for a short silence. With FAST's one second, a busy machine that delays the
#: socket's reader lets the watchdog finish the job from /history first, and the events
#: then arriving for a forgotten job are rightly dropped (tests/agent/test_faults.py
#: covers that path on purpose).
STEADY = dict(silence_timeout=30.0, ping_timeout=30.0)


class Harness:
    def __init__(self, comfy_url: str, tmp: Path, **config: Any) -> None:
        self.bus = MemoryBus()
        self.registry = MemoryRegistry()
        self.blobs = LocalBlobStore(tmp / "assets", durable=False)
        self.config = AgentConfig(node_id=NODE, comfy_url=comfy_url, assets_dir=tmp / "assets", label="test-host", **{**FAST, **config})
        self.agent = Agent(self.config, bus=self.bus, registry=self.registry, blobs=self.blobs)
        self._cond = threading.Condition()
        self.lifecycle: list[dict[str, Any]] = []
        self.user: list[dict[str, Any]] = []
        self.bus.consume_lifecycle(self._on_lifecycle)
        self.bus.subscribe_user_events(self._on_user)

    def _on_lifecycle(self, delivery: Delivery) -> None:
        if delivery.body["type"] in ("succeeded", "failed", "requeue"):
            # What the backend does when a job ends: its slot is free again.
            self.registry.release(delivery.body["node_id"], prompt_id_of(delivery.body["job_id"], delivery.body["attempt"]))
        with self._cond:
            self.lifecycle.append(delivery.body)
            self._cond.notify_all()
        delivery.ack()

    def _on_user(self, event: dict[str, Any]) -> None:
        with self._cond:
            self.user.append(event)
            self._cond.notify_all()

    def start(self) -> Harness:
        self.agent.start()
        self.wait_until(lambda: self.agent.online, what="agent online")
        return self

    def stop(self) -> None:
        self.agent.stop()
        self.bus.close()

    def restart(self, before_start: Callable[[], Any] | None = None) -> Harness:
        """Stop the agent and start a new one on the same node, ports and state dir (what a
        restart after a crash finds: the journal, the registry, ComfyUI's queue)."""
        self.agent.stop()
        if before_start is not None:
            before_start()
        self.agent = Agent(self.config, bus=self.bus, registry=self.registry, blobs=self.blobs)
        self.agent.start()
        self.wait_until(lambda: self.agent.online, what="restarted agent online")
        return self

    # ---- waiting ------------------------------------------------------------------------

    def wait_until(self, predicate: Callable[[], Any], *, timeout: float = WAIT, what: str = "condition") -> Any:
        """Re-evaluate ``predicate`` on every event (and every 50 ms for state that changes silently)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; lifecycle={self.types()}")
                self._cond.wait(min(left, 0.05))

    def events(self, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.lifecycle if e["job_id"] == job_id and (kind is None or e["type"] == kind)]

    def user_events(self, job_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.user if e["job_id"] == job_id and (kind is None or e["type"] == kind)]

    def types(self, job_id: str | None = None) -> list[str]:
        return [e["type"] for e in self.lifecycle if job_id is None or e["job_id"] == job_id]

    def wait_event(self, job_id: str, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        return self.wait_until(lambda: next(iter(self.events(job_id, kind)), None), timeout=timeout, what=f"{kind} of {job_id}")

    def wait_end(self, job_id: str, timeout: float = WAIT) -> dict[str, Any]:
        """The job's terminal lifecycle event."""
        return self.wait_until(
            lambda: next((e for e in self.events(job_id) if e["type"] in ("succeeded", "failed", "requeue")), None),
            timeout=timeout,
            what=f"end of {job_id}",
        )

    # ---- jobs ---------------------------------------------------------------------------

    def store_image(self, size: tuple[int, int] = (32, 24), color: tuple[int, int, int] = (10, 200, 30)) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", size, color).save(buffer, format="PNG")
        return self.blobs.write_bytes(buffer.getvalue()).sha256

    def dispatch(self, message: dict[str, Any], *, reserve: bool = True) -> dict[str, Any]:
        if reserve:
            # Keyed by prompt id (job and attempt), like the dispatcher's reservations.
            assert self.registry.reserve([Candidate(NODE)], message["prompt_id"], message["estimate_seconds"]) == NODE
        self.bus.publish_job(NODE, message)
        return message


def job_message(
    graph: dict[str, Any],
    *,
    uploads: list[dict[str, Any]] | None = None,
    output_nodes: list[str] | None = None,
    stages: dict[str, dict[str, str]] | None = None,
    estimate_seconds: float = 1.0,
) -> dict[str, Any]:
    job_id = uuid.uuid4().hex[:12]
    return {
        "job_id": job_id,
        "attempt": 1,
        "prompt_id": prompt_id_of(job_id, 1),
        "user_id": USER,
        "workflow": "test",
        "prompt": graph,
        "uploads": uploads or [],
        "output_nodes": output_nodes or [],
        "stages": stages or {},
        "estimate_seconds": estimate_seconds,
        "sent_at": time.time(),
    }


def image_upload(asset: str) -> dict[str, Any]:
    return {"asset_id": asset, "name": upload_name(asset), "kind": "image"}


STAGES = {
    "1": {"en": "Reading your image", "zh": "读取图片中"},
    "2": {"en": "Inverting colours", "zh": "反相处理中"},
    "3": {"en": "Scaling", "zh": "缩放中"},
    "4": {"en": "Saving the result", "zh": "保存结果中"},
}


def invert_scale(image: str, *, scale_by: float = 2.0, prefix: str = "studio/out") -> dict[str, Any]:
    """LoadImage → ImageInvert → ImageScaleBy → SaveImage (model-free)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": scale_by}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def alpha_of_rgb(image: str) -> dict[str, Any]:
    """ImageToMask(channel=alpha) on an RGB image: fails at run time with IndexError."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "studio/mask"}},
    }


CKPT = "v1-5-pruned-emaonly.safetensors"


def txt2img(*, steps: int = 8, seed: int = 1) -> dict[str, Any]:
    """The classic text-to-image template wiring."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0], "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "t2i"}},
    }
