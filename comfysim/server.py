"""ComfyUI's HTTP routes (server.py of 0.3.64) on aiohttp, each also under /api/.

Status codes, bodies and quirks follow the real server: unknown ids give ``200 {}``, POST
bodies that are not JSON give aiohttp's plain-text 500, bodies over ``max_upload_size`` give
413 (aiohttp's ``client_max_size``), and ``number`` counts every POST /prompt.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from io import BytesIO
from typing import TYPE_CHECKING, Any

from aiohttp import web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .config import MODEL_FOLDERS
from .errors import ConfigError
from .files import choose_upload_name, upload_target
from .prompt_queue import QueueItem
from .schema import all_info, class_info
from .validation import validate_prompt

if TYPE_CHECKING:
    from .node import SimNode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COMFYUI_VERSION = "0.3.64"
# Keys of extra_data that ComfyUI keeps out of the queue listing and history.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
_FORCE_DOWNLOAD = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}


def build_app(node: SimNode) -> web.Application:
    """The aiohttp application of one simulated node."""
    routes = _Routes(node)
    app = web.Application(client_max_size=node.config.max_upload_size, middlewares=[routes.slow_http])
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/ws", node.hub.handle),
        ("GET", "/prompt", routes.get_prompt),
        ("POST", "/prompt", routes.post_prompt),
        ("GET", "/queue", routes.get_queue),
        ("POST", "/queue", routes.post_queue),
        ("GET", "/history", routes.get_history),
        ("GET", "/history/{prompt_id}", routes.get_history_item),
        ("POST", "/history", routes.post_history),
        ("GET", "/view", routes.view),
        ("POST", "/upload/image", routes.upload_image),
        ("POST", "/upload/mask", routes.upload_mask),
        ("POST", "/interrupt", routes.interrupt),
        ("POST", "/free", routes.free),
        ("GET", "/system_stats", routes.system_stats),
        ("GET", "/object_info", routes.object_info),
        ("GET", "/object_info/{node_class}", routes.object_info_class),
        ("GET", "/features", routes.features),
        ("GET", "/models", routes.models),
        ("GET", "/models/{folder}", routes.model_files),
        ("GET", "/embeddings", routes.embeddings),
        ("GET", "/extensions", routes.extensions),
    ]
    for method, path, handler in table:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    # The fault switchboard lives outside ComfyUI's namespace on purpose.
    app.router.add_get("/sim/faults", routes.get_faults)
    app.router.add_post("/sim/faults", routes.post_faults)
    app.router.add_delete("/sim/faults", routes.delete_faults)
    return app


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class _Routes:
    def __init__(self, node: SimNode) -> None:
        self.node = node

    @web.middleware
    async def slow_http(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        delay = self.node.faults.http_delay
        if delay and not request.path.startswith("/sim/"):
            await asyncio.sleep(delay)
        return await handler(request)

    # ---- prompts -------------------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return _json(self.node.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()  # not JSON -> exception -> aiohttp's plain 500, like ComfyUI
        node = self.node
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = node.number
            if body.get("front"):
                number = -number
            node.number += 1
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}
            return _json({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        result = validate_prompt(prompt, body.get("partial_execution_targets"), node.config, node.folders)
        extra_data = dict(body.get("extra_data") or {})
        if body.get("client_id") is not None:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            return _json({"error": result.error, "node_errors": result.node_errors}, status=400)
        sensitive = {key: extra_data.pop(key) for key in SENSITIVE_EXTRA_DATA_KEYS if key in extra_data}
        node.queue.put(QueueItem(number, prompt_id, prompt, extra_data, result.outputs, sensitive))
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def get_queue(self, request: web.Request) -> web.Response:
        running, pending = self.node.queue.current()
        return _json({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.node.queue.wipe()
        for prompt_id in body.get("delete", []):
            self.node.queue.delete(prompt_id)
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id")
        if not prompt_id or prompt_id in self.node.queue.running_ids():
            self.node.executor.interrupt()
        return web.Response(status=200)

    async def free(self, request: web.Request) -> web.Response:
        body = await request.json()
        for flag in ("unload_models", "free_memory"):
            if body.get(flag):
                self.node.queue.set_flag(flag, body[flag])
        return web.Response(status=200)

    # ---- history -------------------------------------------------------------------------

    async def get_history(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query.get("offset", -1))
        return _json(self.node.queue.history(max_items=max_items, offset=offset))

    async def get_history_item(self, request: web.Request) -> web.Response:
        return _json(self.node.queue.history(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.node.queue.wipe_history()
        for prompt_id in body.get("delete", []):
            self.node.queue.delete_history(prompt_id)
        return web.Response(status=200)

    # ---- files ---------------------------------------------------------------------------

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        folders = self.node.folders
        filename, base = folders.annotated(query["filename"], default=None)
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if base is None:
            base = folders.by_type(query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        folder = str(base)
        if "subfolder" in query:
            nested = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(nested), folder)) != folder:
                return web.Response(status=403)
            folder = nested
        filename = os.path.basename(filename)
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            return web.Response(status=404)
        headers = {"Content-Disposition": f'filename="{filename}"'}
        channel = query.get("channel", "rgba")
        if "preview" in query:
            parts = query["preview"].split(";")
            fmt = parts[0] if parts[0] in ("webp", "jpeg") and "a" not in channel else "webp"
            quality = int(parts[-1]) if parts[-1].isdigit() else 90
            with Image.open(path) as img:
                if fmt == "jpeg" or channel == "rgb":
                    img = img.convert("RGB")
                return web.Response(body=_encode(img, fmt, quality=quality), content_type=f"image/{fmt}", headers=headers)
        if channel == "rgb":
            with Image.open(path) as img:
                rgb = Image.merge("RGB", img.split()[:3]) if img.mode == "RGBA" else img.convert("RGB")
                return web.Response(body=_encode(rgb, "png"), content_type="image/png", headers=headers)
        if channel == "a":
            with Image.open(path) as img:
                alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
                out = Image.new("RGBA", img.size)
                out.putalpha(alpha)
                return web.Response(body=_encode(out, "png"), content_type="image/png", headers=headers)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        if content_type in _FORCE_DOWNLOAD:
            content_type = "application/octet-stream"
        return web.FileResponse(path, headers={**headers, "Content-Type": content_type})

    async def upload_image(self, request: web.Request) -> web.Response:
        return await self._upload(request, mask=False)

    async def upload_mask(self, request: web.Request) -> web.Response:
        return await self._upload(request, mask=True)

    async def _upload(self, request: web.Request, mask: bool) -> web.Response:
        faults = self.node.faults
        if faults.upload_delay:
            await asyncio.sleep(faults.upload_delay)
        if faults.refuse_uploads:
            raise web.HTTPInternalServerError(text="500 Internal Server Error\n\nServer got itself in trouble")
        post = await request.post()
        kind = post.get("type") or "input"
        base = self.node.folders.by_type(str(kind))
        if base is None:
            # ComfyUI hits an unbound variable here and answers 500.
            raise web.HTTPInternalServerError(text="500 Internal Server Error\n\nServer got itself in trouble")
        image = post.get("image")
        if image is None or isinstance(image, str) or not image.filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        target = upload_target(base, subfolder, image.filename)
        if target is None:
            return web.Response(status=400)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        overwrite = post.get("overwrite") in ("true", "1")
        path, must_write = choose_upload_name(target, data, overwrite)
        if must_write:
            if mask:
                self._merge_mask(post.get("original_ref"), data, path)
            else:
                path.write_bytes(data)
        name = os.path.relpath(path, os.path.join(base, os.path.normpath(subfolder)))
        return _json({"name": name, "subfolder": subfolder, "type": kind})

    def _merge_mask(self, original_ref: Any, data: bytes, path: Any) -> None:
        """Copy the uploaded alpha onto the original image; silently nothing if it is missing."""
        ref = json.loads(str(original_ref))
        folders = self.node.folders
        filename, base = folders.annotated(ref["filename"], default=None)
        if not filename or filename[0] == "/" or ".." in filename:
            return
        base = base or folders.by_type(ref.get("type", "output"))
        if base is None:
            return
        folder = str(base)
        if ref.get("subfolder", ""):
            nested = os.path.join(folder, ref["subfolder"])
            if os.path.commonpath((os.path.abspath(nested), folder)) != folder:
                return
            folder = nested
        original = os.path.join(folder, filename)
        if not os.path.isfile(original):
            return
        with Image.open(original) as img:
            info = PngInfo()
            for key, value in getattr(img, "text", {}).items():
                info.add_text(key, value)
            rgba = img.convert("RGBA")
            rgba.putalpha(Image.open(BytesIO(data)).convert("RGBA").getchannel("A"))
            rgba.save(path, pnginfo=info)

    # ---- information ---------------------------------------------------------------------

    async def system_stats(self, request: web.Request) -> web.Response:
        node = self.node
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        free_ram = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        vram_total = node.config.vram_total_bytes
        vram_free = max(vram_total - sum(node.executor.models_loaded.values()), 0)
        system = {
            "os": os.name,
            "ram_total": pages,
            "ram_free": free_ram,
            "comfyui_version": COMFYUI_VERSION,
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": sys.version,
            "pytorch_version": "2.8.0+cu128",
            "embedded_python": False,
            "argv": sys.argv,
        }
        device = {
            "name": "cuda:0 comfysim simulated GPU : cudaMallocAsync",
            "type": "cuda",
            "index": 0,
            "vram_total": vram_total,
            "vram_free": vram_free,
            "torch_vram_total": vram_total,
            "torch_vram_free": vram_free,
        }
        return _json({"system": system, "devices": [device]})

    async def object_info(self, request: web.Request) -> web.Response:
        return _json(all_info(self.node.config, self.node.folders))

    async def object_info_class(self, request: web.Request) -> web.Response:
        class_type = request.match_info["node_class"]
        info = class_info(class_type, self.node.config, self.node.folders)
        return _json({class_type: info} if info is not None else {})

    async def features(self, request: web.Request) -> web.Response:
        return _json(self.node.features())

    async def models(self, request: web.Request) -> web.Response:
        return _json(list(MODEL_FOLDERS))

    async def model_files(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return _json(self.node.config.model_files(folder))

    async def embeddings(self, request: web.Request) -> web.Response:
        return _json([name.rsplit(".", 1)[0] for name in self.node.config.model_files("embeddings")])

    async def extensions(self, request: web.Request) -> web.Response:
        return _json([])

    # ---- fault control (not part of ComfyUI) ---------------------------------------------

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json(self.node.faults.to_dict())

    async def post_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        close = bool(body.pop("close_websockets", False))
        try:
            self.node.set_faults(**body)
        except ConfigError as exc:
            return _json({"error": str(exc)}, status=400)
        if close:
            await self.node.hub.close_all()
        return _json(self.node.faults.to_dict())

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.node.reset_faults()
        return _json(self.node.faults.to_dict())


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buffer = BytesIO()
    img.save(buffer, format=fmt, quality=quality)
    return buffer.getvalue()
