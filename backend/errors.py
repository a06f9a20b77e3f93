"""The backend's error tree.

Every error raised on purpose derives from :class:`StudioError`. ``str(error)`` is the
English message; ``error.zh`` the Chinese one. Messages say what was wrong and what to
do, because they are shown to creators and operators as they are.

The tree says what a failure means to the code that catches it:

- :class:`Unavailable` (and below it :class:`DatabaseUnavailable`, :class:`BusError`,
  :class:`RegistryError`, and the agent's ``ComfyUnavailable``): a service the operation
  needs is away. Nothing is wrong with the request; the same call works once the service
  is back, so it is retried without limit, never counted against a message as poison,
  and shown to a person as "try again in a moment".
- every other :class:`StudioError`: the request itself cannot succeed as it is (bad
  input, a missing file, a state that does not allow it). Retrying it changes nothing;
  it is answered, failed or set aside for an operator.

Third-party exceptions are wrapped into this tree at the adapter edge (SQLAlchemy in
``db/database.py``, redis-py in ``ports/redis_registry.py``, pika in ``ports/rabbitmq.py``),
so no caller above the edges catches a library exception.
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


class LimitReached(RateLimited):
    """A per-user limit (``backend.jobs.limits``) refuses this; ``limit`` names it and
    ``retry_after`` says when it frees up (0: not by waiting, e.g. the storage quota)."""

    def __init__(self, message: str, *, zh: str | None = None, limit: str, retry_after: float = 0.0) -> None:
        super().__init__(message, zh=zh, retry_after=retry_after)
        self.limit = limit


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


class Unavailable(StudioError):
    """A service the operation needs is away (database, bus, registry, ComfyUI): retry
    later, without limit; the request itself is fine."""


class DatabaseUnavailable(Unavailable):
    """The SQL database cannot be reached or dropped the connection (a restart, a
    failover, the network); the transaction did not commit and may be retried."""


class BusError(Unavailable):
    """The message bus (RabbitMQ or in-process) failed; the operation may be retried."""


class RegistryError(Unavailable):
    """The node registry (Redis or in-process) failed; the operation may be retried."""


class AssetStoreError(StudioError):
    """The asset store could not write a file (disk full, quota, read-only); nothing
    half-written is left behind."""


class AssetStoreUnavailable(AssetStoreError, Unavailable):
    """The object store (S3) cannot be reached or failed; nothing was kept, retry later."""
