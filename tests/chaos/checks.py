"""What must hold after every chaos scenario, and the row it adds to the table.

- every job ends in exactly one terminal state within a bound;
- no job runs twice: from the comfysim tallies, per job, each prompt (``job-attempt``) was
  given to a ComfyUI at most once, at most one prompt ran to success, a succeeded job's
  success is its last attempt's, and a job was attempted again only if every earlier
  attempt never ran to completion;
- ``ledger.verify`` passes, and every job is charged with an outcome: a succeeded job has
  outputs and no refund, a failed or cancelled one exactly one refund;
- the registry's reservations equal the jobs holding a node (dispatched, submitted, running);
- a user heard at most one ending (succeeded, failed, cancelled) per job.
"""

from __future__ import annotations

import collections
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from backend import ledger
from backend.db.models import Job, JobOutput, LedgerEntry
from backend.jobs import TERMINAL_STATES
from backend.messages import job_of_prompt

from .cluster import Cluster


@dataclass
class PromptRecord:
    posted: int = 0
    started: int = 0
    outcomes: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return self.outcomes.count("success")


def read_tallies(paths: list[Path]) -> dict[str, PromptRecord]:
    """Every prompt any node was given, with how often it was posted, started and how it ended."""
    prompts: dict[str, PromptRecord] = collections.defaultdict(PromptRecord)
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) < 2:
                continue  # a line torn by a kill mid-write
            record = prompts[words[1]]
            if words[0] == "posted":
                record.posted += 1
            elif words[0] == "started":
                record.started += 1
            elif words[0] == "finished" and len(words) == 3:
                record.outcomes.append(words[2])
    return prompts


#: The table's rows, in the order the scenarios ran; printed at the end of the session.
TABLE: list[Row] = []


@dataclass
class Row:
    """One scenario's line of the table."""

    scenario: str
    faults: int = 0
    jobs: int = 0
    refused: int = 0
    affected: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    twice: int = 0
    settle_s: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def wait_terminal(cluster: Cluster, job_ids: list[str], bound: float) -> dict[str, Job]:
    """The rows of the jobs once all are terminal, or as they are when ``bound`` runs out."""
    deadline = time.monotonic() + bound
    while True:
        with cluster.db.read() as s:
            rows = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
        if len(rows) == len(job_ids) and all(r.state in TERMINAL_STATES for r in rows.values()):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def reservations_match(cluster: Cluster) -> tuple[set[str], set[str]]:
    """(held tickets, tickets of jobs holding a node)."""
    registry = cluster.stack.backend.registry
    with cluster.db.read() as s:
        active = {
            f"{job_id}-{attempt}"
            for job_id, attempt in s.execute(
                select(Job.id, Job.attempts).where(Job.state.in_(("dispatched", "submitted", "running")))
            )
        }
    held = {t for n in registry.reserved_nodes() for t in registry.reservations(n)}
    return held, active


def endings_told(events: queue.Queue[dict[str, Any]]) -> collections.Counter[str]:
    told: collections.Counter[str] = collections.Counter()
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return told
        if event.get("type") in ("succeeded", "failed", "cancelled"):
            told[event["job_id"]] += 1


def check(cluster: Cluster, row: Row, job_ids: list[str], rows: dict[str, Job], *, poison: set[str]) -> None:
    """Fill ``row`` (lost, twice, retried, failed) and its problems from the end state."""
    problems = row.problems
    ids = set(job_ids)

    # One terminal state within the bound, each charged with an outcome.
    with cluster.db.read() as s:
        outputs = dict(
            s.execute(select(JobOutput.job_id, func.count()).where(JobOutput.job_id.in_(ids)).group_by(JobOutput.job_id)).all()
        )
        refunds = dict(
            s.execute(
                select(LedgerEntry.job_id, func.count())
                .where(LedgerEntry.job_id.in_(ids), LedgerEntry.kind == "refund")
                .group_by(LedgerEntry.job_id)
            ).all()
        )
    lost: set[str] = set()
    for job_id in job_ids:
        job = rows.get(job_id)
        if job is None or job.state not in TERMINAL_STATES:
            lost.add(job_id)
            problems.append(f"job {job_id} not ended within the bound: {job.state if job else 'missing'}")
        elif job.state == "succeeded" and (not outputs.get(job_id) or refunds.get(job_id)):
            lost.add(job_id)
            problems.append(f"job {job_id} succeeded with {outputs.get(job_id, 0)} outputs, {refunds.get(job_id, 0)} refunds")
        elif job.state != "succeeded" and refunds.get(job_id) != 1:
            lost.add(job_id)
            problems.append(f"job {job_id} {job.state} with {refunds.get(job_id, 0)} refunds")
    row.lost = len(lost)

    # No job runs twice.
    prompts = read_tallies([node.sim.tally for node in cluster.nodes.values()])
    by_job: dict[str, dict[int, PromptRecord]] = collections.defaultdict(dict)
    for prompt_id, record in prompts.items():
        parsed = job_of_prompt(prompt_id)
        if parsed is not None:
            by_job[parsed[0]][parsed[1]] = record
    twice: set[str] = set()
    for job_id in job_ids:
        attempts = by_job.get(job_id, {})
        job = rows.get(job_id)
        for attempt, record in sorted(attempts.items()):
            if record.posted > 1 or record.started > 1:
                twice.add(job_id)
                problems.append(f"job {job_id} attempt {attempt} posted {record.posted}x, started {record.started}x")
        successes = [a for a, r in attempts.items() if r.succeeded]
        if len(successes) > 1:
            twice.add(job_id)
            problems.append(f"job {job_id} ran to success {len(successes)} times (attempts {sorted(successes)})")
        last = max(attempts, default=0)
        for attempt, record in attempts.items():
            if attempt < last and record.outcomes and record.outcomes[-1] == "success":
                twice.add(job_id)
                problems.append(f"job {job_id} attempt {attempt} had run to completion, yet attempt {last} was given to a node")
        if job is not None and job.state == "succeeded" and successes != [job.attempts]:
            problems.append(f"job {job_id} succeeded as attempt {job.attempts} but ComfyUI succeeded attempts {successes}")
        # A poison job fails where it fails, at its first and only attempt (refunded once: above).
        poisoned = ("failed", "InjectedFault", 1, 1)
        if job_id in poison and job is not None and (job.state, job.error_type, job.attempts, len(attempts)) != poisoned:
            problems.append(f"poison job {job_id}: {job.state} ({job.error_type}) after {job.attempts} attempt(s), "
                            f"{len(attempts)} prompt(s)")
    row.twice = len(twice)
    row.retried = sum(1 for j in rows.values() if j.attempts > 1)
    row.failed = sum(1 for j in rows.values() if j.state == "failed")

    # The books.
    problems.extend(f"ledger: {p}" for p in ledger.verify(cluster.db))

    # At most one ending told per job.
    told = endings_told(cluster.stack.events)
    problems.extend(f"job {j} told {n} endings" for j, n in told.items() if j in ids and n > 1)


def format_table(rows: list[Row], seed: int) -> str:
    head = ("scenario", "faults", "jobs", "refused", "affected", "retried", "failed", "lost", "ran twice", "settle s", "total s")
    body = [
        (r.scenario, str(r.faults), str(r.jobs), str(r.refused), str(r.affected), str(r.retried), str(r.failed), str(r.lost), str(r.twice),
         f"{r.settle_s:.1f}", f"{r.seconds:.1f}")
        for r in rows
    ]
    total = (
        "total", str(sum(r.faults for r in rows)), str(sum(r.jobs for r in rows)), str(sum(r.refused for r in rows)),
        str(sum(r.affected for r in rows)),
        str(sum(r.retried for r in rows)), str(sum(r.failed for r in rows)), str(sum(r.lost for r in rows)),
        str(sum(r.twice for r in rows)), "", f"{sum(r.seconds for r in rows):.1f}",
    )
    widths = [max(len(line[i]) for line in [head, *body, total]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))

    rule = "-" * len(fmt(head))
    lines = [f"chaos suite, seed {seed} (CHAOS_SEED={seed} reproduces the fault timing)", fmt(head), rule,
             *map(fmt, body), rule, fmt(total)]
    return "\n".join(lines)
