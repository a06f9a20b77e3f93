"""The backend's error tree.

Every error raised on purpose derives from :class:`StudioError`. ``str(error)`` is the
English message; ``error.zh`` the Chinese one. Messages say what was wrong and what to
do, because they are shown to creators and operators as they are.
"""

from __future__ import annotations


class StudioError(Exception):
    """Root of all deliberate backend errors."""

    def __init__(self, message: str, *, zh: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.zh = zh or message

    def text(self, lang: str) -> str:
        """The message in ``lang`` ("zh…" → Chinese, anything else → English)."""
        return self.zh if lang.lower().startswith("zh") else self.message


class ConfigError(StudioError):
    """The settings or a config file are wrong; the process cannot start."""


class NotFound(StudioError):
    """A user, job, asset, code or workflow does not exist (or is not yours)."""


class PermissionDenied(StudioError):
    """The caller may not do this (wrong role, disabled account, someone else's job)."""


class AuthError(StudioError):
    """Sign-in failed: unknown name, wrong password or disabled account."""


class RateLimited(StudioError):
    """Too many attempts; ``retry_after`` seconds until the next one is allowed."""

    def __init__(self, message: str, *, zh: str | None = None, retry_after: float = 0.0) -> None:
        super().__init__(message, zh=zh)
        self.retry_after = retry_after


class InsufficientCredits(StudioError):
    """The balance does not cover the price."""


class RedeemError(StudioError):
    """A redeem code is unknown, used or expired."""


class FormulaRejected(StudioError):
    """A cost/guard/estimate formula is not allowed or cannot be evaluated."""


class SpecError(StudioError):
    """A workflow spec is broken; names the file and the field."""


class InvalidParameter(StudioError):
    """A creator's parameter value is missing, of the wrong type or out of range."""

    def __init__(self, message: str, *, zh: str | None = None, param: str | None = None) -> None:
        super().__init__(message, zh=zh)
        self.param = param


class GuardRejected(StudioError):
    """The memory guard predicts the job would fail on every node (too large)."""


class InvalidUpload(StudioError):
    """An uploaded file is too large, not an image we accept, truncated or a bomb."""


class JobStateError(StudioError):
    """A job is not in a state that allows the requested change."""


class NodeUnavailable(StudioError):
    """No online node can run this workflow."""


class BusError(StudioError):
    """The message bus (RabbitMQ or in-process) failed; the operation may be retried."""


class RegistryError(StudioError):
    """The node registry (Redis or in-process) failed; the operation may be retried."""
