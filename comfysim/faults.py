"""Fault injection for chaos tests. Every fault is off by default.

Faults are plain data; the parts that honour them (executor, websocket hub, HTTP middleware)
read the node's current ``Faults`` each time, so switching one on over ``POST /sim/faults``
takes effect for the next node, step, message or request.

| name              | effect                                                                 |
|-------------------|------------------------------------------------------------------------|
| raise_in_node     | a node whose id or class_type matches raises ``InjectedFault``         |
| hang_in_node      | a matching node blocks (ignoring /interrupt) until the fault is cleared |
| exit_at_step      | the process calls ``os._exit(3)`` when any progress bar reaches step N |
| ws_silent         | websockets stay open but no message is sent on them                    |
| upload_delay      | seconds to wait before answering /upload/image and /upload/mask        |
| refuse_uploads    | uploads fail with HTTP 500 like an unhandled server error              |
| http_delay        | seconds to wait before answering any ComfyUI route                     |

``close_websockets`` is an action, not a state: ``POST /sim/faults {"close_websockets": true}``
closes every open websocket once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

EXIT_CODE = 3


@dataclass
class Faults:
    raise_in_node: str | None = None
    hang_in_node: str | None = None
    exit_at_step: int | None = None
    ws_silent: bool = False
    upload_delay: float = 0.0
    refuse_uploads: bool = False
    http_delay: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Faults:
        return cls().merged(raw)

    def merged(self, raw: dict[str, Any]) -> Faults:
        """A copy with the given keys changed; unknown keys are an error, not ignored."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(raw) - names
        if unknown:
            raise ConfigError(f"unknown faults: {sorted(unknown)} (known: {sorted(names)})")
        updated = dataclasses.replace(self, **raw)
        updated.check()
        return updated

    def check(self) -> None:
        if self.exit_at_step is not None and int(self.exit_at_step) < 1:
            raise ConfigError("exit_at_step counts from 1")
        if self.upload_delay < 0 or self.http_delay < 0:
            raise ConfigError("delays cannot be negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def hits(self, target: str | None, node_id: str, class_type: str) -> bool:
        """True when a node-targeted fault names this node by id or by class."""
        return target is not None and target in (node_id, class_type)
