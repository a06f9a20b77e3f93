"""The states of a job, and which state each may be entered from.

A job is ``queued`` until the dispatcher gives it a node (``dispatched``), the agent hands
it to ComfyUI (``submitted``) and ComfyUI starts it (``running``); it ends ``succeeded``,
``failed`` or ``cancelled``, and the last two are refunded. A lost node or a dispatch
nobody took sends it back to ``queued``. This module imports nothing of ours, so the
table definitions (:mod:`backend.db.models`) can use it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Not finished: the job holds its charge and may still run.
ACTIVE: tuple[JobState, ...] = (JobState.QUEUED, JobState.DISPATCHED, JobState.SUBMITTED, JobState.RUNNING)
#: On a node (a reservation holds one of its slots).
ON_NODE: tuple[JobState, ...] = (JobState.DISPATCHED, JobState.SUBMITTED, JobState.RUNNING)
#: Finished; nothing changes a job's state after these.
TERMINAL: tuple[JobState, ...] = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
#: Finished and given its credits back.
REFUNDED: tuple[JobState, ...] = (JobState.FAILED, JobState.CANCELLED)

#: The states each state may be entered from.
ENTERED_FROM: Mapping[JobState, tuple[JobState, ...]] = {
    # back to the backlog: a lost node, or a dispatch the agent never took
    JobState.QUEUED: (JobState.DISPATCHED, JobState.SUBMITTED),
    JobState.DISPATCHED: (JobState.QUEUED,),
    JobState.SUBMITTED: (JobState.DISPATCHED,),
    JobState.RUNNING: (JobState.DISPATCHED, JobState.SUBMITTED),
    JobState.SUCCEEDED: (JobState.DISPATCHED, JobState.SUBMITTED, JobState.RUNNING),
    JobState.FAILED: ACTIVE,
    JobState.CANCELLED: ACTIVE,
}
