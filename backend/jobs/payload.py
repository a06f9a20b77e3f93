"""A job as JSON for those outside: what the REST API answers and a webhook posts.

Built from :func:`backend.jobs.queries.job_card` (the database, the truth): state, price,
refund, the outputs' asset ids and, for a failure or a cancellation, the reason in both
languages.
"""

from __future__ import annotations

from typing import Any

from backend.jobs.messages import failure_reason
from backend.jobs.queries import JobCard

CANCELLED = {"en": "The job was cancelled. Your credits were refunded.", "zh": "任务已取消，积分已退还。"}


def job_payload(card: JobCard) -> dict[str, Any]:
    job = card.job
    reason = None
    if job.state == "failed":
        reason = failure_reason(job.error_stage, job.error_type or "Error", job.error_message or "")
    elif job.state == "cancelled":
        reason = CANCELLED

    def when(moment: Any) -> str | None:
        return moment.isoformat() if moment is not None else None

    return {"id": job.id, "workflow": job.workflow, "state": job.state, "params": dict(job.params), "cost": job.cost,
            "refunded": card.refunded, "progress": float(job.progress or 0.0), "created_at": when(job.created_at),
            "started_at": when(job.started_at), "finished_at": when(job.finished_at),
            "outputs": [{"asset_id": o.asset_id, "kind": o.kind} for o in card.outputs], "reason": reason}
