"""Client-side helpers for the comfysim tests: a websocket session that waits for events
with bounded timeouts, upload/submit shortcuts and the graphs of the transcripts."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import websocket
from PIL import Image

from ..services import free_port
from ..waiting import wait_for

#: Ceiling for a message or an answer of the simulator: reached only when it never comes,
#: so it is generous — a loaded machine (the suite runs three files at once) is slow.
WAIT = 60.0
#: Ceiling for a ``python -m comfysim`` subprocess to answer (imports are slow when loaded).
START = 90.0


@dataclass
class Frame:
    """A binary websocket frame, decoded like a ComfyUI client does."""

    event: int
    image: bytes
    image_format: int | None = None
    metadata: dict[str, Any] | None = None


class WsClient:
    """A websocket session as an agent opens it."""

    def __init__(self, url: str, client_id: str | None = None, path: str = "/ws", flags: bool = False) -> None:
        self.client_id = client_id if client_id is not None else f"agent-{uuid.uuid4().hex[:8]}"
        query = f"?clientId={self.client_id}" if self.client_id else ""
        self.ws = websocket.create_connection(url.replace("http", "ws", 1) + path + query, timeout=WAIT)
        if flags:
            self.ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))

    def recv(self, timeout: float = WAIT) -> dict[str, Any] | Frame:
        self.ws.settimeout(timeout)
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise websocket.WebSocketConnectionClosedException("server closed the websocket")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return json.loads(data)
        event = struct.unpack(">I", data[:4])[0]
        if event == 4:
            length = struct.unpack(">I", data[4:8])[0]
            return Frame(event, data[8 + length :], metadata=json.loads(data[8 : 8 + length]))
        return Frame(event, data[8:], image_format=struct.unpack(">I", data[4:8])[0])

    def until(self, predicate: Callable[[Any], bool], timeout: float = WAIT) -> list[Any]:
        """Every message up to and including the first that satisfies ``predicate``."""
        seen = []
        while True:
            message = self.recv(timeout)
            seen.append(message)
            if predicate(message):
                return seen

    def until_done(self, prompt_id: str, timeout: float = WAIT) -> list[Any]:
        return self.until(lambda m: is_type(m, "executing") and m["data"] == {"node": None, "prompt_id": prompt_id}, timeout)

    def until_status(self, remaining: int, timeout: float = WAIT) -> list[Any]:
        return self.until(
            lambda m: is_type(m, "status") and m["data"]["status"]["exec_info"]["queue_remaining"] == remaining, timeout
        )

    def assert_silent(self, timeout: float = 0.3) -> None:
        """Nothing arrives within ``timeout`` (a bounded wait for an absence)."""
        self.ws.settimeout(timeout)
        try:
            data = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return
        raise AssertionError(f"unexpected message {data!r}")

    def close(self) -> None:
        self.ws.close()


def is_type(message: Any, kind: str) -> bool:
    return isinstance(message, dict) and message.get("type") == kind


def types(messages: list[Any]) -> list[str]:
    return [m["type"] if isinstance(m, dict) else f"binary{m.event}" for m in messages]


def png_bytes(width: int = 64, height: int = 48, color: tuple[int, ...] = (0, 0, 129), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(url: str, name: str, data: bytes, **fields: str) -> requests.Response:
    return requests.post(f"{url}/upload/image", files={"image": (name, data, "image/png")}, data=fields, timeout=WAIT)


def submit(url: str, prompt: dict[str, Any], client_id: str | None = None, **extra: Any) -> requests.Response:
    body: dict[str, Any] = {"prompt": prompt, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    return requests.post(f"{url}/prompt", json=body, timeout=WAIT)


def pipeline(image: str = "studio_in.png", scale_by: float = 2.0, prefix: str = "studio/run") -> dict[str, Any]:
    """The model-free pipeline of transcript §4: LoadImage -> Invert -> ScaleBy -> SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}, "_meta": {"title": "Load Image"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}, "_meta": {"title": "Invert"}},
        "3": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact", "scale_by": scale_by},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def preview_graph(width: int = 16, height: int = 16, batch: int = 2, color: int = 16711680) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch, "color": color}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def text_to_image(seed: int = 42, steps: int = 8, width: int = 64, height: int = 64, ckpt: str = "v1-5-pruned-emaonly.safetensors", prefix: str = "t2i") -> dict[str, Any]:
    """The classic text-to-image template wiring."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def wait_http(url: str, proc: subprocess.Popen, timeout: float = START) -> None:  # type: ignore[type-arg]
    """Until the simulator subprocess at ``url`` answers; fails at once if it exits."""

    def answers() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else f"exited with {proc.returncode}"
        try:
            requests.get(f"{url}/system_stats", timeout=WAIT)
            return True
        except requests.ConnectionError:
            return False

    wait_for(answers, timeout, f"{url} to answer", interval=0.05)
