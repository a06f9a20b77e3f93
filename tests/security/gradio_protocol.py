"""Gradio's queue protocol driven directly, as an attacker would, without the page.

A :class:`Attacker` is a ``requests`` session with a signed-in cookie. It reads the app's
config, joins events on ``/studio/gradio_api/queue/join`` with whatever data it likes and
reads the outcome from the ``/queue/data`` event stream. The Create page's form exists
only after its ``@gr.render`` ran for the session, so :meth:`Attacker.open_form` plays the
page's load and the render and returns the session's form components and events.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests

API = "/studio/gradio_api"
EVENT_TIMEOUT = 60.0


@dataclass
class Outcome:
    """How an event ended: its output data, or the error text the user would see."""

    success: bool
    data: list[Any] = field(default_factory=list)
    error: str | None = None
    render: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Everything the server sent back for this event, as one string to search."""
        return json.dumps(self.messages, ensure_ascii=False)


@dataclass
class Form:
    """The components and events a render produced for one session."""

    config: dict[str, Any]

    def components(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.config.get("components", []) if c.get("type") == kind]

    def component(self, elem_id: str) -> dict[str, Any]:
        for c in self.config.get("components", []):
            if c.get("props", {}).get("elem_id") == elem_id:
                return c
        raise KeyError(elem_id)

    def values(self, dependency: dict[str, Any], **given: Any) -> list[Any]:
        """The data a browser would send for ``dependency``: each input's current value,
        except the inputs named in ``given`` (by component id, as a string)."""
        by_id = {c["id"]: c for c in self.config.get("components", [])}
        return [given[str(i)] if str(i) in given else by_id.get(i, {}).get("props", {}).get("value")
                for i in dependency["inputs"]]

    def events_with_input(self, component_id: int) -> list[dict[str, Any]]:
        return [d for d in self.config.get("dependencies", []) if component_id in d.get("inputs", [])]

    def event(self, component_id: int, trigger: str) -> dict[str, Any]:
        for d in self.config.get("dependencies", []):
            if [component_id, trigger] in [list(t) for t in d.get("targets", [])]:
                return d
        raise KeyError((component_id, trigger))


class Attacker:
    """One browser-less session of a signed-in user against a running studio."""

    def __init__(self, base_url: str, http: requests.Session) -> None:
        self.base = base_url.rstrip("/")
        self.http = http
        self.session_hash = uuid.uuid4().hex[:11]
        self._config: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            r = self.http.get(f"{self.base}/studio/config", timeout=30)
            r.raise_for_status()
            self._config = r.json()
        return self._config

    def dependency(self, *, api_name: str | None = None, page: str | None = None) -> dict[str, Any]:
        for d in self.config["dependencies"]:
            if api_name is not None and d.get("api_name") == api_name:
                return d
        raise KeyError(api_name)

    def loads(self, page: str = "") -> list[dict[str, Any]]:
        """The page-load events of one page (``""`` is Create)."""
        return [d for d in self.config["dependencies"]
                if any(t[1] == "load" for t in d.get("targets", [])) and (d.get("page") or "") == page]

    def upload(self, name: str, data: bytes) -> str:
        """Upload a file the way the page does; returns the server path Gradio gives it."""
        r = self.http.post(f"{self.base}{API}/upload", files={"files": (name, data)}, timeout=60)
        r.raise_for_status()
        return r.json()[0]

    def call(self, dependency: dict[str, Any] | int, data: list[Any], *, trigger_id: int | None = None,
             event_data: Any = None) -> Outcome:
        """Join one event and follow the event stream to its end."""
        fn_index = dependency if isinstance(dependency, int) else dependency["id"]
        if trigger_id is None and not isinstance(dependency, int):
            targets = dependency.get("targets") or []
            trigger_id = targets[0][0] if targets else None
        body = {"data": data, "event_data": event_data, "fn_index": fn_index, "trigger_id": trigger_id,
                "session_hash": self.session_hash}
        r = self.http.post(f"{self.base}{API}/queue/join", json=body, timeout=30)
        if r.status_code != 200:
            return Outcome(success=False, error=f"HTTP {r.status_code}: {r.text}",
                           messages=[{"status": r.status_code, "body": r.text}])
        event_id = r.json()["event_id"]
        return self._follow(event_id)

    def _follow(self, event_id: str) -> Outcome:
        messages: list[dict[str, Any]] = []
        with self.http.get(f"{self.base}{API}/queue/data", params={"session_hash": self.session_hash},
                           stream=True, timeout=EVENT_TIMEOUT) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                messages.append(msg)
                if msg.get("msg") == "process_completed":
                    output = msg.get("output") or {}
                    return Outcome(success=bool(msg.get("success")), data=output.get("data") or [],
                                   error=output.get("error"), render=output.get("render_config"), messages=messages)
                if msg.get("msg") == "close_stream":
                    break
        return Outcome(success=False, error="the event stream ended without a result", messages=messages)

    def open_form(self, workflow: str | None = None) -> Form:
        """Run the Create page's load events, then its form render; the session's form."""
        render_fn = None
        for dep in self.loads(""):
            self.call(dep, [None] * len(dep.get("inputs", [])))
        for dep in self.config["dependencies"]:
            if dep.get("renderable") is not None or dep.get("render_id") is not None:
                render_fn = dep
        if render_fn is None:  # the render listens to the selection state's change
            render_fn = next(d for d in self.config["dependencies"] if d.get("show_progress") == "hidden"
                             and any(t[1] == "change" for t in d.get("targets", []))
                             and len(d.get("inputs", [])) == 1 and not d.get("outputs"))
        if workflow is not None:
            card = self.component_by_elem_id(f"use-{workflow}")
            pick = next(d for d in self.config["dependencies"] if [card["id"], "click"] in d.get("targets", []))
            self.call(pick, [None] * len(pick["inputs"]))
        outcome = self.call(render_fn, [None] * len(render_fn.get("inputs", [])))
        assert outcome.success and outcome.render, outcome.text[:2000]
        return Form(outcome.render)

    def component_by_elem_id(self, elem_id: str) -> dict[str, Any]:
        for c in self.config["components"]:
            if c.get("props", {}).get("elem_id") == elem_id:
                return c
        raise KeyError(elem_id)


def file_data(path: str, name: str = "x.png") -> dict[str, Any]:
    """A ``FileData`` value naming ``path``, as Gradio's client sends one."""
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}
