"""The jobs room: a job from submission through dispatch, the node's events and the
sweeper to its end, and the reads the front ends show of it.

The package itself is the job store's API (:mod:`.store`): ``jobs.create``, ``jobs.get``,
``jobs.transition`` and the rest; the other modules are imported by name. The store is
loaded on first use, so that :mod:`.state` (which the table definitions import) can be
imported without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import (
        MAX_IDEMPOTENCY_KEY,
        JobRecord,
        NewJob,
        add,
        advance,
        cancel,
        create,
        fail,
        find_by_key,
        get,
        list_for_user,
        most_used_workflows,
        request_hash,
        same_request,
        succeed,
        transition,
    )

__all__ = [
    "MAX_IDEMPOTENCY_KEY", "JobRecord", "NewJob", "add", "advance", "cancel", "create", "fail", "find_by_key", "get",
    "list_for_user", "most_used_workflows", "request_hash", "same_request", "succeed", "transition",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
