"""Prometheus metrics: jobs by state, the backlog, nodes and their slots.

Rendered on request from the database and the registry (both already hold the truth),
so several studio replicas report the same figures and nothing is kept in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from .db.models import JOB_STATES, Job, LedgerEntry
from .runtime import Backend
from backend.jobs.state import JobState

#: Dead letters counted at most per scrape (listing them takes each from its queue and back).
DEAD_LETTERS_COUNTED = 1000


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(backend: Backend) -> str:
    """The metrics in the Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[float, dict[str, str] | None]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(_line(name, value, labels) for value, labels in samples)

    with backend.db.read() as s:
        by_state = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        by_workflow = s.execute(
            select(Job.workflow, Job.state, func.count()).where(Job.state.in_((JobState.SUCCEEDED, JobState.FAILED))).group_by(Job.workflow, Job.state)
        ).all()
        charged = s.scalar(select(func.coalesce(-func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.kind == "charge")) or 0
        refunded = s.scalar(select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.kind == "refund")) or 0
    metric("studio_jobs", "gauge", "Jobs by lifecycle state.", [(by_state.get(st, 0), {"state": st}) for st in JOB_STATES])
    metric("studio_backlog_jobs", "gauge", "Jobs waiting in the central backlog for a node.", [(by_state.get(JobState.QUEUED, 0), None)])
    metric(
        "studio_jobs_finished_total", "counter", "Finished jobs by workflow and outcome.",
        [(n, {"workflow": wf, "outcome": st}) for wf, st, n in by_workflow],
    )
    metric("studio_credits_charged_total", "counter", "Credits charged for jobs.", [(charged, None)])
    metric("studio_credits_refunded_total", "counter", "Credits refunded for failed or cancelled jobs.", [(refunded, None)])

    views = backend.registry.nodes()
    metric("studio_nodes_online", "gauge", "Nodes with a live heartbeat that reach their ComfyUI.", [(sum(v.state.online for v in views), None)])
    node_samples = lambda attr: [  # noqa: E731
        (attr(v), {"node": v.state.node_id, "simulated": str(v.state.simulated).lower()}) for v in views
    ]
    metric("studio_node_up", "gauge", "1 if the node is online.", node_samples(lambda v: 1 if v.state.online else 0))
    metric("studio_node_slots", "gauge", "Job slots of the node (running + queued in ComfyUI).", node_samples(lambda v: v.state.slots))
    metric("studio_node_reserved_slots", "gauge", "Slots holding a job.", node_samples(lambda v: len(v.reservations)))
    metric("studio_node_queue_remaining", "gauge", "ComfyUI's own queue length.", node_samples(lambda v: v.state.queue_remaining))
    metric("studio_node_vram_free_bytes", "gauge", "Free VRAM reported by ComfyUI.", node_samples(lambda v: v.state.vram_free_mb * 2**20))
    metric("studio_node_speed_ratio", "gauge", "Measured seconds per estimated second.", node_samples(lambda v: v.state.speed))
    depth = [(backend.bus.job_queue_depth(v.state.node_id), {"node": v.state.node_id}) for v in views]
    metric("studio_node_job_queue_messages", "gauge", "Job messages waiting on the bus for the node's agent.", depth)
    letters = len(backend.bus.dead_letters(limit=DEAD_LETTERS_COUNTED))
    metric("studio_dead_letters", "gauge", f"Agent events set aside for an operator (counted up to {DEAD_LETTERS_COUNTED}).",
           [(letters, None)])
    return "\n".join(out) + "\n"
