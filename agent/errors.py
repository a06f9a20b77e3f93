"""The agent's error tree.

:class:`AgentError` derives from the backend's :class:`~backend.errors.StudioError`
so the embedded studio, which runs agents as threads, handles agent failures with the
same ``except StudioError`` and shows the same bilingual, actionable messages.
:class:`ComfyUnavailable` is also an :class:`~backend.errors.Unavailable`: retried, never
a reason to give up on a job. Third-party exceptions (requests, websocket-client) are
wrapped at the edge, in ``comfy.py`` and ``socket.py``; nothing above them catches a
library exception.
"""

from __future__ import annotations

from typing import Any

from backend.errors import StudioError, Unavailable


class AgentError(StudioError):
    """Root of every deliberate agent error."""


class ComfyUnavailable(AgentError, Unavailable):
    """ComfyUI did not answer (refused, timed out, 5xx): try again once it is back."""


class PromptRejected(AgentError):
    """ComfyUI refused the prompt (HTTP 400 validation); retrying the same graph is futile."""

    def __init__(self, message: str, *, error_type: str, graph_node: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        #: The graph node ComfyUI blamed, if any.
        self.graph_node = graph_node
        self.details = details


class UploadFailed(AgentError):
    """An input could not be put on the node (missing from the asset store, refused)."""
