"""What must hold after every chaos scenario, and the row it adds to the table.

- every job ends in exactly one terminal state within a bound;
- no job runs twice: from the comfysim tallies, per job, each prompt (``job-attempt``) was
  given to a ComfyUI at most once, at most one prompt ran to success, a succeeded job's
  success is its last attempt's, and a job was attempted again only if every earlier
  attempt never ran to completion;
- no output is lost for a job that ran: a job whose prompt ran to success on a ComfyUI
  ended ``succeeded`` with its outputs (unless the scenario's fault explains its failure,
  e.g. the ComfyUI died before its files were fetched, or the asset store was full), and
  every output's file is complete (its bytes hash to its name; no half-written file is
  left in the store's temporary folder);
- ``ledger.verify`` passes, and every job is charged with an outcome: a succeeded job has
  outputs and no refund, a failed or cancelled one exactly one refund;
- the reservations equal the jobs holding a node (dispatched, submitted, running), and no
  ComfyUI ever held more prompts than its node's slots (over-commit);
- nothing was set aside as a dead letter (no event failed for its own reasons);
- a user heard at most one ending (succeeded, failed, cancelled) per job.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select

from backend.accounts import ledger
from backend.db import Database
from backend.db.models import Job, JobOutput, LedgerEntry
from backend.errors import NotFound, Unavailable
from backend.jobs.messages import job_of_prompt
from backend.jobs.state import TERMINAL as TERMINAL_STATES

#: Slots of every chaos node (one running plus one waiting in its ComfyUI).
SLOTS = 2


def _object_hash(cluster: Any, asset: str) -> str:
    """The SHA-256 of the object named ``asset`` in the cluster's bucket ("" if missing)."""
    try:
        with cluster.blobs.open(asset) as fh:
            digest = hashlib.sha256()
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
            return digest.hexdigest()
    except NotFound:
        return ""


def _bucket_problems(cluster: Any) -> list[str]:
    """Every object in the bucket is whole (its bytes hash to its name), and no multipart
    upload is left pending."""
    problems = [f"object {blob.asset_id} in the bucket is not whole"
                for blob in cluster.blobs.listing() if _object_hash(cluster, blob.asset_id) != blob.asset_id]
    pending = cluster.rgw.client().list_multipart_uploads(Bucket=cluster.blobs.bucket).get("Uploads", [])
    if pending:
        problems.append(f"multipart uploads left pending: {[u['Key'] for u in pending][:5]}")
    return problems


class Observed(Protocol):
    """What the checks read from a cluster, whichever kind it is."""

    db: Database
    assets_dir: Path

    def tallies(self) -> list[Path]: ...

    def reservations(self) -> tuple[set[str], set[str]] | None:
        """(held tickets, tickets of jobs holding a node), or None where unobservable."""

    def endings_told(self) -> collections.Counter[str] | None:
        """Endings each job's user heard, or None where unobservable."""

    def dead_letters(self) -> list[Any]: ...


@dataclass
class PromptRecord:
    posted: int = 0
    started: int = 0
    outcomes: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> int:
        return self.outcomes.count("success")


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def read_tallies(paths: Iterable[Path]) -> dict[str, PromptRecord]:
    """Every prompt any node was given, with how often it was posted, started and how it ended."""
    prompts: dict[str, PromptRecord] = collections.defaultdict(PromptRecord)
    for path in paths:
        for words in _lines(path):
            if len(words) < 2:
                continue  # "boot", or a line torn by a kill mid-write
            record = prompts[words[1]]
            if words[0] == "posted":
                record.posted += 1
            elif words[0] == "started":
                record.started += 1
            elif words[0] == "finished" and len(words) == 3:
                record.outcomes.append(words[2])
    return prompts


def most_held(path: Path) -> int:
    """The most prompts one ComfyUI held at once (queued or running), from its tally."""
    held: set[str] = set()
    most = 0
    for words in _lines(path):
        if words == ["boot"]:
            held.clear()  # a restarted ComfyUI starts empty
        elif len(words) >= 2 and words[0] == "posted":
            held.add(words[1])
            most = max(most, len(held))
        elif len(words) >= 2 and words[0] in ("finished", "deleted"):
            held.discard(words[1])
    return most


def most_booked(jobs: Iterable[Job]) -> dict[str, int]:
    """Per node, the most jobs it held at once as the database recorded them: each job's
    last attempt holds its node from ``dispatched_at`` until ``finished_at`` (an earlier
    attempt's stay is not recorded, which can only undercount)."""
    moments: dict[str, list[tuple[Any, int]]] = collections.defaultdict(list)
    for job in jobs:
        if job.node_id is None or job.dispatched_at is None or job.finished_at is None:
            continue
        moments[job.node_id] += [(job.dispatched_at, 1), (job.finished_at, -1)]
    most: dict[str, int] = {}
    for node, points in moments.items():
        held = 0
        for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at the same moment
            held += step
            most[node] = max(most.get(node, 0), held)
    return most


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
    outputs_lost: int = 0
    settle_s: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def wait_terminal(db: Database, job_ids: list[str], bound: float) -> dict[str, Job]:
    """The rows of the jobs once all are terminal, or as they are when ``bound`` runs out."""
    deadline = time.monotonic() + bound
    rows: dict[str, Job] = {}
    while True:
        try:
            with db.read() as s:
                rows = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
        except Unavailable:
            pass  # the database is still coming back
        if len(rows) == len(job_ids) and all(r.state in TERMINAL_STATES for r in rows.values()):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def active_tickets(db: Database) -> set[str]:
    """The tickets (``job-attempt``) of the jobs holding a node in the database."""
    with db.read() as s:
        return {
            f"{job_id}-{attempt}"
            for job_id, attempt in s.execute(
                select(Job.id, Job.attempts).where(Job.state.in_(("dispatched", "submitted", "running")))
            )
        }


def check(cluster: Observed, row: Row, job_ids: list[str], rows: dict[str, Job], *, poison: set[str],
          excused: frozenset[str] = frozenset()) -> None:
    """Fill ``row`` (lost, twice, outputs lost, retried, failed) and its problems from the end
    state. ``excused``: error types the scenario's fault may give a job that ran to success."""
    problems = row.problems
    ids = set(job_ids)

    # One terminal state within the bound, each charged with an outcome.
    with cluster.db.read() as s:
        outputs: dict[str, list[str]] = collections.defaultdict(list)
        for job_id, asset in s.execute(select(JobOutput.job_id, JobOutput.asset_id).where(JobOutput.job_id.in_(ids))):
            outputs[job_id].append(asset)
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
            problems.append(f"job {job_id} succeeded with {len(outputs.get(job_id, []))} outputs, {refunds.get(job_id, 0)} refunds")
        elif job.state != "succeeded" and refunds.get(job_id) != 1:
            lost.add(job_id)
            problems.append(f"job {job_id} {job.state} with {refunds.get(job_id, 0)} refunds")
    row.lost = len(lost)

    # No job runs twice, and no job that ran loses its outputs.
    prompts = read_tallies(cluster.tallies())
    by_job: dict[str, dict[int, PromptRecord]] = collections.defaultdict(dict)
    for prompt_id, record in prompts.items():
        parsed = job_of_prompt(prompt_id)
        if parsed is not None:
            by_job[parsed[0]][parsed[1]] = record
    twice: set[str] = set()
    outputs_lost: set[str] = set()
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
        if successes and job is not None and job.state in TERMINAL_STATES:
            kept = job.state == "succeeded" and outputs.get(job_id)
            if not kept and job.error_type not in excused:
                outputs_lost.add(job_id)
                problems.append(f"job {job_id} ran to success on ComfyUI but ended {job.state} ({job.error_type}) "
                                f"with {len(outputs.get(job_id, []))} outputs")
        # A poison job fails where it fails, at its first and only attempt (refunded once: above).
        poisoned = ("failed", "InjectedFault", 1, 1)
        if job_id in poison and job is not None and (job.state, job.error_type, job.attempts, len(attempts)) != poisoned:
            problems.append(f"poison job {job_id}: {job.state} ({job.error_type}) after {job.attempts} attempt(s), "
                            f"{len(attempts)} prompt(s)")
    row.twice = len(twice)
    row.retried = sum(1 for j in rows.values() if j.attempts > 1)
    row.failed = sum(1 for j in rows.values() if j.state == "failed")

    # Every output's file is whole, and nothing half-written is left behind.
    rgw = getattr(cluster, "rgw", None)
    for job_id, assets in outputs.items():
        for asset in assets:
            if rgw is not None:
                found = _object_hash(cluster, asset)
                if found != asset:
                    outputs_lost.add(job_id)
                    problems.append(f"job {job_id}: output {asset} is {'not whole' if found else 'missing'} in the bucket")
                continue
            path = cluster.assets_dir / asset[:2] / asset[2:4] / asset
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != asset:
                outputs_lost.add(job_id)
                problems.append(f"job {job_id}: output {asset} is {'not whole' if path.is_file() else 'missing'} in the store")
    if rgw is not None:
        problems.extend(_bucket_problems(cluster))
    else:
        tmp = cluster.assets_dir / "tmp"
        leftovers = sorted(p.name for p in tmp.glob("*")) if tmp.is_dir() else []
        if leftovers:
            problems.append(f"half-written files left in the asset store: {leftovers[:5]}")
    row.outputs_lost = len(outputs_lost)

    # No node was given more jobs than its slots: as the database saw it (a restarted studio
    # that forgot which slots were taken books them twice), and as its ComfyUI saw it.
    for job in rows.values():  # most_booked below needs each stay to end after it began
        if job.dispatched_at and job.finished_at and job.dispatched_at > job.finished_at:
            problems.append(f"job {job.id} was dispatched at {job.dispatched_at:%H:%M:%S.%f}, after it finished "
                            f"at {job.finished_at:%H:%M:%S.%f}")
    for node, most in most_booked(rows.values()).items():
        if most > SLOTS:
            problems.append(f"node {node} held {most} jobs at once in the database, it has {SLOTS} slots")
    for tally in cluster.tallies():
        if (most := most_held(tally)) > SLOTS:
            problems.append(f"{tally.name}: a ComfyUI held {most} prompts at once, its node has {SLOTS} slots")

    # The books.
    problems.extend(f"ledger: {p}" for p in ledger.verify(cluster.db))

    # Nothing set aside: every event was applied.
    letters = cluster.dead_letters()
    problems.extend(f"dead letter: {d.queue} {d.body.get('type')} of job {d.body.get('job_id')}: {d.reason}" for d in letters)

    # At most one ending told per job.
    told = cluster.endings_told()
    if told is not None:
        problems.extend(f"job {j} told {n} endings" for j, n in told.items() if j in ids and n > 1)


def settle_reservations(cluster: Observed, row: Row, wait: Callable[..., Any]) -> None:
    """Wait (a little) for the reservations to equal the jobs holding a node; else a problem."""
    def settled() -> bool:
        try:
            found = cluster.reservations()
        except Unavailable:
            return False
        return found is None or found[0] == found[1]

    try:
        wait(settled, 10, "reservations == jobs holding a node")
    except AssertionError:
        found = cluster.reservations()
        assert found is not None
        row.problems.append(f"reservations {sorted(found[0])} but jobs holding a node {sorted(found[1])}")


def format_table(rows: list[Row], seed: int) -> str:
    head = ("scenario", "faults", "jobs", "refused", "affected", "retried", "failed", "lost", "ran twice", "outputs lost",
            "settle s", "total s")
    body = [
        (r.scenario, str(r.faults), str(r.jobs), str(r.refused), str(r.affected), str(r.retried), str(r.failed), str(r.lost),
         str(r.twice), str(r.outputs_lost), f"{r.settle_s:.1f}", f"{r.seconds:.1f}")
        for r in rows
    ]
    total = (
        "total", str(sum(r.faults for r in rows)), str(sum(r.jobs for r in rows)), str(sum(r.refused for r in rows)),
        str(sum(r.affected for r in rows)),
        str(sum(r.retried for r in rows)), str(sum(r.failed for r in rows)), str(sum(r.lost for r in rows)),
        str(sum(r.twice for r in rows)), str(sum(r.outputs_lost for r in rows)), "", f"{sum(r.seconds for r in rows):.1f}",
    )
    widths = [max(len(line[i]) for line in [head, *body, total]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))

    rule = "-" * len(fmt(head))
    lines = [f"chaos suite, seed {seed} (CHAOS_SEED={seed} reproduces the fault timing)", fmt(head), rule,
             *map(fmt, body), rule, fmt(total)]
    return "\n".join(lines)
