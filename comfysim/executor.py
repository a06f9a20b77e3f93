"""The single worker thread: takes prompts off the queue and executes them node by node.

Behaviour copied from ComfyUI's execution.py and main.py prompt_worker:
- classic caching: a node is reused when its class, literal inputs, IS_CHANGED value and
  upstream are identical to a node of the previous prompt; cached nodes get no ``executing``,
  but a cached output node re-sends ``executed`` with its old UI output;
- message order per prompt and who receives what (the prompt's own client, or everyone);
- cooperative interrupt, checked before each node and at every progress step;
- ``execution_success`` before the history entry, ``executing`` with ``node: null`` after it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from .config import SimConfig
from .errors import InjectedFault, InterruptProcessing, SimError, SimulatedOutOfMemory
from .faults import EXIT_CODE, Faults
from .files import Folders
from .nodes import REGISTRY, Result, RunContext
from .prompt_queue import PromptQueue, QueueItem
from .schema import captured_schema, class_info, input_specs
from .validation import full_type_name
from .websocket import SocketHub

log = logging.getLogger("comfysim.executor.Executor")

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)
_IDLE_WAIT = 1.0
_FAULT_POLL = 0.05


def now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    def __init__(
        self,
        *,
        config: SimConfig,
        folders: Folders,
        queue: PromptQueue,
        hub: SocketHub,
        faults: Callable[[], Faults],
        name: str = "comfysim-worker",
    ) -> None:
        self.config = config
        self.folders = folders
        self.queue = queue
        self.hub = hub
        self.faults = faults
        self.models_loaded: dict[str, int] = {}
        # Node outputs by input signature: (outputs, ui). Only the previous prompt's nodes are
        # kept, which is ComfyUI's "classic" cache.
        self.cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self._interrupt = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._interrupt.set()
        self.queue.close()
        self._thread.join(timeout)

    def interrupt(self) -> None:
        """ComfyUI's interrupt_processing: honoured at the next node start or progress step."""
        self._interrupt.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    def reset_interrupt(self) -> None:
        # ComfyUI clears the flag when a prompt starts, so an interrupt sent while idle is lost.
        self._interrupt.clear()

    def sleep_interruptibly(self, seconds: float) -> None:
        self._interrupt.wait(seconds)

    def _work(self) -> None:
        while not self._stopping.is_set():
            task = self.queue.get(timeout=_IDLE_WAIT)
            if task is not None:
                task_id, item = task
                started = time.monotonic()
                try:
                    entry = _PromptRun(self, item).execute()
                except Exception:  # a simulator bug must not kill the only worker thread
                    log.exception("prompt %s: internal simulator error", item.prompt_id)
                    entry = {"outputs": {}, "status": {"status_str": "error", "completed": False, "messages": []}, "meta": {}}
                if self._stopping.is_set():
                    return
                self.queue.task_done(task_id, entry)
                client = item.extra_data.get("client_id")
                if client is not None:
                    self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, client)
                self.hub.last_node_id = None
                log.info(
                    "prompt %s finished: %s in %.2fs",
                    item.prompt_id,
                    entry["status"]["status_str"],
                    time.monotonic() - started,
                )
            flags = self.queue.take_flags()
            if flags.get("unload_models", flags.get("free_memory", False)):
                self.models_loaded.clear()
            if flags.get("free_memory"):
                self.cache.clear()


class _PromptRun:
    """The execution of one prompt; also the progress sink handed to its nodes."""

    def __init__(self, executor: Executor, item: QueueItem) -> None:
        self.ex = executor
        self.item = item
        self.prompt = item.prompt
        self.prompt_id = item.prompt_id
        self.client: str | None = item.extra_data.get("client_id")
        self.messages: list[list[Any]] = []
        self.progress_nodes: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.values: dict[str, tuple[Any, ...]] = {}
        self.ui_outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.current: str | None = None
        self.signatures: dict[str, str] = {}

    # ---- messages ------------------------------------------------------------------------

    def _add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if self.client is not None or broadcast:
            self.ex.hub.send(event, data, self.client)

    def _to_owner(self, event: str, data: dict[str, Any]) -> None:
        if self.client is not None:
            self.ex.hub.send(event, data, self.client)

    def _progress_state(self, node_id: str, value: float, total: float, state: str) -> None:
        self.progress_nodes[node_id] = {
            "value": value,
            "max": total,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        # No client_id means broadcast, as ComfyUI's progress handler sends to server.client_id.
        snapshot = {"prompt_id": self.prompt_id, "nodes": copy.deepcopy(self.progress_nodes)}
        self.ex.hub.send("progress_state", snapshot, self.client)

    # ---- ProgressSink --------------------------------------------------------------------

    def progress(self, value: float, total: float, preview: Image.Image | None, fmt: str) -> None:
        self._check_interrupt()
        node_id = self.current
        assert node_id is not None
        step = self.ex.faults().exit_at_step
        if step is not None and value >= step:
            log.error("prompt %s: fault exit_at_step=%s, exiting the process", self.prompt_id, step)
            logging.shutdown()
            os._exit(EXIT_CODE)
        self._progress_state(node_id, value, total, "running")
        message = {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id}
        if preview is None:
            self.ex.hub.send("progress", message, self.client)
            return
        buffer = io.BytesIO()
        preview.save(buffer, format=fmt)
        image = buffer.getvalue()
        if self.ex.hub.supports_preview_metadata(self.client):
            meta = {
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
                "image_type": f"image/{fmt.lower()}",
            }
            self.ex.hub.send_preview(image, fmt, meta, self.client)
            self.ex.hub.send("progress", message, self.client)
        else:
            self.ex.hub.send("progress", message, self.client)
            self.ex.hub.send_preview(image, fmt, None, self.client)

    def wait_step(self, seconds: float) -> None:
        self.ex.sleep_interruptibly(seconds)

    def _check_interrupt(self) -> None:
        if self.ex.interrupted:
            raise InterruptProcessing()

    # ---- execution -----------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        self.ex.reset_interrupt()
        self.ex.hub.owner = self.client
        log.info("prompt %s started (outputs %s)", self.prompt_id, self.item.outputs)
        self._add_message("execution_start", {"prompt_id": self.prompt_id})
        signatures = self.signatures
        for output_id in self.item.outputs:
            self._signature(output_id, signatures)
        cache = self.ex.cache
        for stale in [key for key in cache if key not in signatures.values()]:
            del cache[stale]
        cached = [node_id for node_id in self.prompt if signatures.get(node_id) in cache]
        self._add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id})
        try:
            for node_id, root in self._order(signatures):
                self._run_node(node_id, signatures[node_id], root)
        except InterruptProcessing:
            log.info("prompt %s interrupted at node %s", self.prompt_id, self.current)
            self._add_message(
                "execution_interrupted",
                {
                    "prompt_id": self.prompt_id,
                    "node_id": self.current,
                    "node_type": self.prompt[self.current]["class_type"],
                    "executed": list(self.executed),
                },
                broadcast=True,
            )
            return self._entry(False)
        except _NodeFailed as failure:
            self._add_message("execution_error", failure.details)
            return self._entry(False)
        self._add_message("execution_success", {"prompt_id": self.prompt_id})
        return self._entry(True)

    def _entry(self, success: bool) -> dict[str, Any]:
        status = {"status_str": "success" if success else "error", "completed": success, "messages": self.messages}
        return {"outputs": self.ui_outputs, "status": status, "meta": self.meta}

    def _signature(self, node_id: str, memo: dict[str, str]) -> str:
        if node_id in memo:
            return memo[node_id]
        node = self.prompt[node_id]
        definition = REGISTRY[node["class_type"]]
        parts: list[Any] = [node["class_type"]]
        if definition.is_changed is not None:
            try:
                parts.append(definition.is_changed(self.ex.folders, node["inputs"]))
            except Exception:  # noqa: BLE001 - an unreadable input must simply never hit the cache
                parts.append(os.urandom(8).hex())
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                parts.append((name, self._signature(value[0], memo), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True, default=str)))
        memo[node_id] = hashlib.sha256(repr(parts).encode()).hexdigest()
        return memo[node_id]

    def _order(self, signatures: dict[str, str]) -> list[tuple[str, bool]]:
        """The nodes to run, in ComfyUI's order (``comfy_execution/graph.py``, ``ExecutionList``),
        each with whether it is one of the prompt's outputs.

        ``add_node`` walks each output's inputs with a stack (the last input of a node is
        visited first) and records nodes in the order visited; a cached input is neither
        visited nor waited for. Then, while nodes remain, of those whose inputs are done
        (in that recorded order) ``ux_friendly_pick_node`` runs an output node first, else
        one that an output waits for, else one that feeds a node an output waits for,
        else the first. So in the text-to-image template the latent and the negative
        prompt's encoder run before the positive one. Nothing here is decided at run time
        (no lazy inputs, no async nodes), so the whole order is known before the first node.
        """
        cached = self.ex.cache

        def links(node_id: str) -> list[str]:
            return [v[0] for v in self.prompt[node_id]["inputs"].values()
                    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)]

        pending: dict[str, None] = {}  # insertion-ordered, like ExecutionList.pendingNodes
        blockers: dict[str, set[str]] = {}
        blocking: dict[str, dict[str, None]] = {}

        def add_node(root: str) -> None:
            stack, found = [root], []
            while stack:
                node_id = stack.pop()
                if node_id in pending:
                    continue
                pending[node_id], blockers[node_id], blocking[node_id] = None, set(), {}
                for source in links(node_id):
                    if signatures[source] not in cached:
                        stack.append(source)
                    found.append((source, node_id))
            for source, target in found:
                if signatures[source] not in cached or source in pending:
                    add_node(source)
                    blocking[source][target] = None
                    blockers[target].add(source)

        def is_output(node_id: str) -> bool:
            return bool(captured_schema().get(self.prompt[node_id]["class_type"], {}).get("output_node"))

        def pick(ready: list[str]) -> str:
            for node_id in ready:
                if is_output(node_id):
                    return node_id
            for node_id in ready:
                if any(is_output(b) for b in blocking[node_id]):
                    return node_id
            for node_id in ready:
                if any(is_output(b2) for b in blocking[node_id] if b in pending for b2 in blocking[b]):
                    return node_id
            return ready[0]

        for output_id in self.item.outputs:
            add_node(output_id)
        order: list[tuple[str, bool]] = []
        while pending:
            node_id = pick([n for n in pending if not blockers[n]])
            order.append((node_id, node_id in self.item.outputs))
            del pending[node_id]
            for target in blocking.pop(node_id):
                blockers[target].discard(node_id)
            blockers.pop(node_id)
        return order

    def _record_ui(self, node_id: str, ui: dict[str, Any]) -> None:
        self.ui_outputs[node_id] = ui
        self.meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
        self._to_owner(
            "executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id}
        )

    def _run_node(self, node_id: str, signature: str, root: bool) -> None:
        cache = self.ex.cache
        self.current = node_id
        if signature in cache:
            outputs, ui = cache[signature]
            self.values[node_id] = outputs
            if ui is not None:
                self._record_ui(node_id, ui)
            self._progress_state(node_id, 1, 1, "finished")
            return
        node = self.prompt[node_id]
        class_type = node["class_type"]
        self._progress_state(node_id, 0.0, 1.0, "running")
        self._to_owner("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})
        self.ex.hub.last_node_id = node_id
        self._check_interrupt()
        kwargs = self._inputs(node)
        try:
            self._apply_node_faults(node_id, class_type)
            result = REGISTRY[class_type].function(self._context(node_id, class_type), **kwargs)
        except InterruptProcessing:
            raise
        except Exception as exc:  # noqa: BLE001 - any node failure becomes execution_error
            raise _NodeFailed(self._error_details(node_id, class_type, kwargs, exc)) from None
        if not isinstance(result, Result):
            result = Result(outputs=tuple(result))
        self.values[node_id] = result.outputs
        cache[signature] = (result.outputs, result.ui)
        self.executed.append(node_id)
        if result.ui is not None:
            self._record_ui(node_id, result.ui)
        total = self.progress_nodes[node_id]["max"]
        self._progress_state(node_id, total, total, "finished")

    def _apply_node_faults(self, node_id: str, class_type: str) -> None:
        faults = self.ex.faults()
        if faults.hits(faults.hang_in_node, node_id, class_type):
            log.warning("prompt %s: fault hang_in_node at %s (%s)", self.prompt_id, node_id, class_type)
            while not self.ex.stopping:
                current = self.ex.faults()
                if not current.hits(current.hang_in_node, node_id, class_type):
                    break
                time.sleep(_FAULT_POLL)
        if faults.hits(faults.raise_in_node, node_id, class_type):
            raise InjectedFault(f"comfysim fault: raise_in_node {faults.raise_in_node}")

    def _context(self, node_id: str, class_type: str) -> RunContext:
        return RunContext(
            node_id=node_id,
            class_type=class_type,
            prompt_id=self.prompt_id,
            prompt=self.prompt,
            extra_data=self.item.extra_data,
            config=self.ex.config,
            folders=self.ex.folders,
            sink=self,
            models_loaded=self.ex.models_loaded,
        )

    def _inputs(self, node: dict[str, Any]) -> dict[str, Any]:
        info = class_info(node["class_type"], self.ex.config, self.ex.folders)
        assert info is not None
        kwargs = {}
        for name, _category, _kind, _options in input_specs(info):
            if name not in node["inputs"]:
                continue
            value = node["inputs"][name]
            if isinstance(value, list):
                source = value[0]
                if source not in self.values:  # a cached input that was not revisited
                    self.values[source] = self.ex.cache[self.signatures[source]][0]
                value = self.values[source][value[1]]
            kwargs[name] = value
        return kwargs

    def _error_details(self, node_id: str, class_type: str, kwargs: dict[str, Any], exc: Exception) -> dict[str, Any]:
        message = f"{exc}\n"
        if isinstance(exc, SimulatedOutOfMemory):
            message = f"{exc}\n{OOM_TIPS}"
            self.ex.models_loaded.clear()  # ComfyUI unloads all models after an OOM
        log.error("prompt %s: node %s (%s) failed: %s", self.prompt_id, node_id, class_type, exc)
        current_inputs = {name: [_format_value(value)] for name, value in kwargs.items()}
        hidden = {"prompt": self.prompt, "extra_pnginfo": self.item.extra_data.get("extra_pnginfo")}
        for name in REGISTRY[class_type].hidden:
            current_inputs[name] = [_format_value(hidden[name])]
        return {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": class_type,
            "executed": list(self.executed),
            "exception_message": message,
            "exception_type": full_type_name(exc),
            "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": current_inputs,
            "current_outputs": list(self.prompt),
        }


class _NodeFailed(SimError):
    """Internal: carries a node failure's execution_error payload out of the node loop."""

    def __init__(self, details: dict[str, Any]) -> None:
        super().__init__(details["exception_message"])
        self.details = details


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return "tensor(" + np.array2string(value, threshold=16, edgeitems=2, precision=4) + ")"
    return str(value)
