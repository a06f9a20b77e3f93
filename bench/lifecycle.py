"""Benchmark 10 — the lifecycle consumer: agent events applied per second, by applier count.

Every job a node runs sends the backend four events (``submitted``, ``started``, one
``output``, ``succeeded``); the lifecycle consumer applies each as a conditional write and
tells the job's user. How fast it drains a queue that filled up (a busy cluster, a
consumer that was away) decides how late a creator sees a result and how far the
database's view of the nodes lags.

Each case: ``--jobs`` jobs are put in ``dispatched`` on 8 nodes (straight into the private
schema), their events published to the real RabbitMQ lifecycle queue in a seeded random
interleaving that keeps each job's own order, then a ``LifecycleConsumer`` with the case's
number of appliers is started and timed until every job is ``succeeded`` with its output
registered. The applier counts alternate, ``--repeats`` times each; the median counts.

    python -m bench lifecycle [--jobs 500] [--appliers 1,2,4,8] [--repeats 3] [--db postgres|sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from . import common

WORKFLOW = "bench-sampler"
NODES = 8
USERS = 5
EVENTS_PER_JOB = 4


@contextlib.contextmanager
def _sqlite_db(tmp: Path) -> Iterator[Any]:
    from backend.db import Database, migrate

    db = Database(f"sqlite:///{tmp / 'studio.db'}")
    try:
        migrate.upgrade(db)
        yield db
    finally:
        db.dispose()


def _jobs(db: Any, count: int) -> list[dict[str, Any]]:
    """``count`` jobs dispatched to the nodes, as the dispatcher leaves them."""
    import datetime as dt

    from argon2 import PasswordHasher
    from sqlalchemy import insert

    from backend import accounts
    from backend.db.models import Job

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    users = [accounts.create_user(db, f"bench-life-{n}", "bench password 1", hasher=cheap).id for n in range(USERS)]
    now = dt.datetime.now(dt.timezone.utc)
    rows = [dict(id=uuid.uuid4().hex, user_id=users[i % USERS], workflow=WORKFLOW,
                 params={"prompt": "a lighthouse", "steps": 1, "seed": i}, inputs={}, idempotency_key=uuid.uuid4().hex,
                 state="dispatched", cost=0, memory_mb=0.0, estimate_seconds=1.0, node_id=f"life-{i % NODES}",
                 attempts=1, created_at=now, updated_at=now, dispatched_at=now) for i in range(count)]
    with db.write() as s:
        s.execute(insert(Job), rows)
    return rows


def _reset(db: Any) -> None:
    """Every job back to ``dispatched``, no output registered."""
    from sqlalchemy import delete, update

    from backend.db.models import Job, JobOutput

    with db.write() as s:
        s.execute(delete(JobOutput))
        s.execute(update(Job).values(state="dispatched", progress=0.0, prompt_id=None, submitted_at=None, started_at=None,
                                     finished_at=None))


def _events(rows: list[dict[str, Any]], blob: Any, seed: int) -> list[dict[str, Any]]:
    """Every job's four events, the jobs interleaved at random, each job's in its order."""
    from backend.jobs import messages

    def of(row: dict[str, Any]) -> list[dict[str, Any]]:
        common_fields = dict(job_id=row["id"], attempt=1, node_id=row["node_id"])
        return [messages.lifecycle("submitted", prompt_id=f"{row['id']}-1", **common_fields),
                messages.lifecycle("started", **common_fields),
                messages.lifecycle("output", graph_node="9", position=0, asset_id=blob.sha256, size=blob.size,
                                   kind="image", format="PNG", **common_fields),
                messages.lifecycle("succeeded", seconds=1.0, **common_fields)]

    pending = [of(row) for row in rows]
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while pending:
        i = rng.randrange(len(pending))
        out.append(pending[i].pop(0))
        if not pending[i]:
            pending[i] = pending[-1]
            pending.pop()
    return out


def _done(db: Any, jobs: int) -> bool:
    from sqlalchemy import func, select

    from backend.db.models import Job, JobOutput

    with db.read() as s:
        succeeded = s.scalar(select(func.count()).select_from(Job).where(Job.state == "succeeded")) or 0
        outputs = s.scalar(select(func.count()).select_from(JobOutput)) or 0
    return succeeded == jobs and outputs == jobs


def _case(backend: Any, events: list[dict[str, Any]], jobs: int, appliers: int) -> float:
    """Seconds from the consumer's start until every event is applied."""
    from backend.jobs.lifecycle import LifecycleConsumer

    _reset(backend.db)
    for body in events:
        backend.bus.publish_lifecycle(body)
    consumer = LifecycleConsumer(backend, appliers=appliers)
    started = time.perf_counter()
    consumer.start()
    try:
        deadline = time.monotonic() + 600
        while not _done(backend.db, jobs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{appliers} applier(s) did not apply {len(events)} events within 600 s")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        consumer.stop()


def run(args: argparse.Namespace) -> dict[int, list[float]]:
    from tests.e2e.stack import png_bytes

    counts = [int(n) for n in args.appliers.split(",")]
    times: dict[int, list[float]] = {n: [] for n in counts}
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="studio-bench-life-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        db = stack.enter_context(common.postgres_db() if args.db == "postgres" else _sqlite_db(tmp))
        registry = stack.enter_context(common.redis_registry())
        bus = stack.enter_context(common.rabbit_bus())
        backend = common.build_backend(db, bus, registry, tmp, common.library(common.BENCH_WORKFLOWS))
        blob = backend.blobs.write_bytes(png_bytes(64, 64))
        events = _events(_jobs(db, args.jobs), blob, seed=7)
        for repeat in range(args.repeats):
            for n in counts:
                seconds = _case(backend, events, args.jobs, n)
                times[n].append(seconds)
                print(f"run {repeat + 1}: {n} applier(s): {len(events)} events in {seconds:.2f} s "
                      f"({len(events) / seconds:.0f}/s)", flush=True)
    return times


def main(argv: list[str] | None = None) -> dict[int, float]:
    parser = argparse.ArgumentParser(prog="python -m bench lifecycle", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--appliers", default="1,2,4,8", help="applier counts to compare, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args(argv)
    common.quiet_logs()
    times = run(args)
    events = args.jobs * EVENTS_PER_JOB
    base = statistics.median(times[min(times)])
    rates: dict[int, float] = {}
    rows = []
    for n, samples in times.items():
        median = statistics.median(samples)
        rates[n] = events / median
        rows.append([n, f"{median:.2f} s", f"**{rates[n]:.0f}/s**", f"{base / median:.2f}×",
                     ", ".join(f"{events / t:.0f}" for t in samples)])
    out = common.table(["appliers", "drain time, median", "events applied/s", "÷ fewest appliers", "per run (events/s)"],
                       rows)
    print(out)
    if not args.no_write and args.db == "postgres":
        cmd = "python -m bench lifecycle" + ("" if argv is None else " " + " ".join(argv))
        common.write_section("lifecycle", f"""## 10. Lifecycle appliers

`{cmd.strip()}` — {args.jobs} jobs `dispatched` on {NODES} nodes, their {events:,} events
(`submitted`, `started`, one `output`, `succeeded` each; jobs interleaved at random, each
job's events in order) waiting in the RabbitMQ lifecycle queue; a `LifecycleConsumer` with
the row's appliers drains it into PostgreSQL (conditional writes, the output's file checked
in the asset store, one user event per change). Applier counts alternate, {args.repeats}
runs each. {common.machine()}.

{out}
""")
    return rates
