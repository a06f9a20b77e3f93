"""The agent: one per ComfyUI host, the only thing that talks to it.

``python -m agent --comfy-url URL --node-id ID`` runs it as a process; the embedded studio
builds :class:`Agent` objects and runs them as threads. See ``docs/agent.md``.
"""

from .agent import Agent
from .config import AgentConfig
from .errors import AgentError

__all__ = ["Agent", "AgentConfig", "AgentError"]
