"""One simulated ComfyUI node: its folders, queue, websocket hub, worker and web app."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import SimConfig
from .executor import Executor
from .faults import Faults
from .files import Folders
from .prompt_queue import PromptQueue
from .server import build_app
from .websocket import SocketHub

log = logging.getLogger("comfysim.node.SimNode")


class SimNode:
    """State shared by the routes and the worker of one node. Not started by itself; the
    runtime (``comfysim.runtime``) serves ``app`` and calls ``start``/``stop``."""

    def __init__(self, config: SimConfig, *, name: str = "comfysim") -> None:
        self.config = config
        self.name = name
        self.faults: Faults = config.faults
        self._own_dir = config.data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="comfysim-")) if config.data_dir is None else config.data_dir
        self.folders = Folders.under(self.data_dir)
        # Counter behind the `number` of POST /prompt; counts failed posts too.
        self.number = 0
        self.hub = SocketHub(lambda: self.faults, self.features)
        self.queue = PromptQueue(self.hub.status)
        self.hub.queue_info = self.queue_info
        self.executor = Executor(
            config=config,
            folders=self.folders,
            queue=self.queue,
            hub=self.hub,
            faults=lambda: self.faults,
            name=f"{name}-worker",
        )
        self.app: web.Application = build_app(self)

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def features(self) -> dict[str, Any]:
        return {"supports_preview_metadata": True, "max_upload_size": self.config.max_upload_size}

    def set_faults(self, **changes: Any) -> Faults:
        """Switch faults on or off (see ``comfysim.faults``); unknown names raise ConfigError."""
        self.faults = self.faults.merged(changes)
        log.warning("%s: faults now %s", self.name, self.faults)
        return self.faults

    def reset_faults(self) -> Faults:
        self.faults = Faults()
        return self.faults

    async def start(self) -> None:
        await self.hub.start()
        self.executor.start()

    def stop(self) -> None:
        self.executor.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
