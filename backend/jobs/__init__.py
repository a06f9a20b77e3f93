"""The jobs room: a job from submission through dispatch, the node's events and the
sweeper to its end, and the reads the front ends show of it.

The package itself is the job store's API (:mod:`.store`): ``jobs.create``, ``jobs.get``,
``jobs.transition`` and the rest; the other modules are imported by name.
"""

from .store import (
    ACTIVE_STATES,
    ENTERED_FROM,
    MAX_IDEMPOTENCY_KEY,
    TERMINAL_STATES,
    JobRecord,
    NewJob,
    cancel,
    create,
    find_by_key,
    fail,
    get,
    list_for_user,
    most_used_workflows,
    succeed,
    transition,
)

__all__ = [
    "ACTIVE_STATES", "ENTERED_FROM", "MAX_IDEMPOTENCY_KEY", "TERMINAL_STATES", "JobRecord", "NewJob", "cancel",
    "create", "fail", "find_by_key", "get", "list_for_user", "most_used_workflows", "succeed", "transition",
]
