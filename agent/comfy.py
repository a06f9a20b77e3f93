"""The HTTP half of ComfyUI's API, as the agent uses it.

Every request goes through :meth:`ComfyClient._request`, which turns transport failures,
timeouts and 5xx answers into :class:`ComfyUnavailable`; callers never see a requests
exception. Unknown ids give ``200 {}`` on ComfyUI, so absence is an empty dict here too.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import requests

from .errors import ComfyUnavailable, PromptRejected

log = logging.getLogger("agent.comfy.ComfyClient")

CHUNK = 1024 * 1024
#: Node errors listed in a rejection message, so a huge graph cannot flood the event.
MAX_LISTED_ERRORS = 5


class ComfyClient:
    """A thin, thread-safe client of one ComfyUI server."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # One session per thread would be stricter; requests' Session is used from several
        # threads here only for independent requests, which its connection pool supports.
        self._http = requests.Session()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, stream: bool = False, timeout: float | None = None, **kwargs: Any
    ) -> requests.Response:
        try:
            response = self._http.request(
                method, self.base_url + path, timeout=timeout or self.timeout, stream=stream, **kwargs
            )
        except requests.RequestException as exc:
            raise ComfyUnavailable(f"ComfyUI did not answer {method} {path}: {type(exc).__name__}") from None
        if response.status_code >= 500:
            response.close()
            raise ComfyUnavailable(f"ComfyUI answered {method} {path} with HTTP {response.status_code}")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered {method} {path} with HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise ComfyUnavailable(f"ComfyUI answered {method} {path} with something that is not JSON") from None

    # ---- information -------------------------------------------------------------------------

    def system_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The health check: system info and devices with their VRAM."""
        return self._json("GET", "/system_stats", timeout=timeout)

    def object_info(self) -> dict[str, Any]:
        return self._json("GET", "/object_info")

    def model_folders(self) -> list[str]:
        return list(self._json("GET", "/models"))

    def model_files(self, folder: str) -> list[str]:
        response = self._request("GET", f"/models/{folder}")
        if response.status_code == 404:
            return []
        try:
            return [str(name) for name in response.json()]
        except ValueError:
            raise ComfyUnavailable(f"ComfyUI's model list of {folder} is not JSON") from None

    # ---- queue and history -------------------------------------------------------------------

    def queue(self) -> tuple[set[str], set[str]]:
        """Prompt ids (running, pending) in ComfyUI's queue."""
        data = self._json("GET", "/queue")
        running = {item[1] for item in data.get("queue_running", [])}
        pending = {item[1] for item in data.get("queue_pending", [])}
        return running, pending

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None while it is queued, running or unknown."""
        return self._json("GET", f"/history/{prompt_id}").get(prompt_id)

    def submit(self, prompt: dict[str, Any], *, prompt_id: str, client_id: str | None) -> dict[str, Any]:
        """Queue ``prompt`` under our ``prompt_id``; :class:`PromptRejected` on a 400.

        Without a ``client_id`` ComfyUI sends the prompt's events to nobody; the runner then
        follows it through /history.
        """
        body: dict[str, Any] = {"prompt": prompt, "prompt_id": prompt_id}
        if client_id is not None:
            body["client_id"] = client_id
        response = self._request("POST", "/prompt", json=body)
        if response.status_code == 200:
            return response.json()
        try:
            data = response.json()
        except ValueError:
            data = {"error": {"type": f"http_{response.status_code}", "message": response.text[:200]}}
        raise rejection(data, status=response.status_code)

    def delete_pending(self, prompt_id: str) -> None:
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def interrupt(self, prompt_id: str) -> None:
        # With a prompt_id ComfyUI interrupts only that prompt, never a neighbour's.
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    # ---- files -------------------------------------------------------------------------------

    def input_exists(self, subfolder: str, filename: str) -> bool:
        """Whether ``input/subfolder/filename`` is on the node, without downloading it."""
        params = {"type": "input", "subfolder": subfolder, "filename": filename}
        # GET with a streamed body closed unread: HEAD is not routed on every server.
        response = self._request("GET", "/view", params=params, stream=True)
        response.close()
        return response.status_code == 200

    def upload(self, chunks: Iterable[bytes], *, size: int | None, filename: str, subfolder: str,
               mask_of: dict[str, str] | None = None) -> str:
        """Upload an input image (or a mask onto ``mask_of``); the name the node stored it under.

        The bytes are streamed from ``chunks`` into the multipart body as it is sent, so an
        input is never held whole in memory; with its ``size`` known the body has a
        Content-Length, else it goes out chunked (aiohttp, ComfyUI's server, takes both).
        """
        fields = {"type": "input", "subfolder": subfolder}
        path = "/upload/image"
        if mask_of is not None:
            path = "/upload/mask"
            fields["original_ref"] = json.dumps(mask_of)
        body = MultipartBody(fields, part="image", filename=filename, content_type="image/png", chunks=chunks, size=size)
        data = body if body.length is not None else iter(body)
        response = self._request("POST", path, data=data, headers={"Content-Type": body.content_type})
        if response.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI refused the upload of {filename} with HTTP {response.status_code}")
        return str(response.json()["name"])

    def download(self, ref: dict[str, Any]) -> Iterator[bytes]:
        """The bytes of an output file ref (``filename``, ``subfolder``, ``type``), streamed."""
        params = {"filename": ref["filename"], "subfolder": ref.get("subfolder", ""), "type": ref.get("type", "output")}
        response = self._request("GET", "/view", params=params, stream=True)
        if response.status_code != 200:
            response.close()
            raise ComfyUnavailable(f"ComfyUI has no output file {ref['filename']} (HTTP {response.status_code})")
        return _chunks(response)


class MultipartBody:
    """A ``multipart/form-data`` body of text fields and one file part whose bytes are
    read from an iterable only while the body is sent. requests sends an iterable that has
    a ``__len__`` with that Content-Length and a bare iterator chunked, so a body of
    unknown ``length`` is passed as ``iter(body)``."""

    def __init__(self, fields: dict[str, str], *, part: str, filename: str, content_type: str,
                 chunks: Iterable[bytes], size: int | None) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{part}"; filename="{_quoted(filename)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._head, self._tail = head, f"\r\n--{boundary}--\r\n".encode()
        self._chunks = chunks
        self._size = size

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        for chunk in self._chunks:
            if chunk:  # an empty chunk would end a chunked body early
                yield chunk
        yield self._tail

    @property
    def length(self) -> int | None:
        """The body's size in bytes, when the file part's size is known."""
        if self._size is None:
            return None
        return len(self._head) + self._size + len(self._tail)

    def __len__(self) -> int:
        return self.length or 0


def _quoted(filename: str) -> str:
    """The file name as a quoted-string of a Content-Disposition header."""
    return filename.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")


def _chunks(response: requests.Response) -> Iterator[bytes]:
    with response:
        try:
            yield from response.iter_content(CHUNK)
        except requests.RequestException as exc:
            raise ComfyUnavailable(f"the download broke off: {type(exc).__name__}") from None


def rejection(data: dict[str, Any], *, status: int) -> PromptRejected:
    """A readable summary of ComfyUI's 400 answer: the error, then each node's first errors."""
    error = data.get("error") or {}
    if not isinstance(error, dict):
        error = {"type": "invalid_prompt", "message": str(error)}
    parts = [str(error.get("message") or error.get("type") or f"HTTP {status}").rstrip(".")]
    if error.get("details"):
        parts[0] += f" ({error['details']})"
    node_errors = data.get("node_errors") or {}
    first_node = next(iter(node_errors), None)
    for graph_node_id, entry in list(node_errors.items())[:MAX_LISTED_ERRORS]:
        for err in entry.get("errors", [])[:2]:
            detail = err.get("details") or err.get("message") or err.get("type")
            parts.append(f"node {graph_node_id} ({entry.get('class_type', '?')}): {detail}")
    return PromptRejected(
        "; ".join(parts),
        error_type=str(error.get("type") or "invalid_prompt"),
        graph_node=first_node,
        details=node_errors,
    )
