"""Benchmark 8 — the dispatcher's pass: its cost per placed job with a long backlog.

A pass reads the fair backlog, places jobs on free slots (the registry's atomic reserve),
marks them ``dispatched`` in the database and publishes them. Its cost should grow with
the free slots it fills, not with the backlog behind them. Nodes are simulated directly
in the registry (their heartbeats and capabilities, as an agent writes them; no ComfyUI
runs); the database, registry and bus are the real PostgreSQL, Redis and RabbitMQ. Jobs
are inserted straight into the private schema (``queued``, many users), as submits leave
them.

Each case is timed over one ``Dispatcher.dispatch_once()``, repeated ``--repeats`` times
with the placed jobs put back in the backlog and the registry emptied in between:

- **all free**: ``--nodes`` nodes with ``--slots`` free slots each, ``--jobs`` waiting;
- **few free**: the same, with every slot but ``--few`` held, so the pass places few
  jobs out of the same backlog (the cost a pass pays whatever it places);
- **short backlog**: few free slots, ``--short-jobs`` waiting (the same pass with a
  tenth of the backlog: equal cost means it does not grow with the backlog).

    python -m bench dispatch [--jobs 10000] [--nodes 200] [--slots 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from . import common

WORKFLOW = "bench-sampler"
USERS = 50


def _fill(db: Any, jobs: int) -> None:
    """``jobs`` queued jobs spread over ``USERS`` users, a millisecond apart."""
    import datetime as dt

    from argon2 import PasswordHasher
    from sqlalchemy import delete, insert

    from backend import accounts
    from backend.db.models import Job, LedgerEntry

    with db.write() as s:
        s.execute(delete(LedgerEntry))
        s.execute(delete(Job))
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    users = [u.id for u in accounts.list_users(db)]
    for n in range(len(users), USERS):
        users.append(accounts.create_user(db, f"bench-pass-{n}", "bench password 1", hasher=cheap).id)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    rows = [dict(id=uuid.uuid4().hex, user_id=users[i % USERS], workflow=WORKFLOW,
                 params={"prompt": "a lighthouse", "steps": 1, "seed": i}, inputs={}, idempotency_key=uuid.uuid4().hex,
                 state="queued", cost=1, memory_mb=0.0, estimate_seconds=1.0 + (i % 7),
                 created_at=start + dt.timedelta(milliseconds=i), updated_at=start) for i in range(jobs)]
    with db.write() as s:
        for chunk in range(0, len(rows), 2000):
            s.execute(insert(Job), rows[chunk:chunk + 2000])


def _reset(db: Any) -> None:
    """Every job back in the backlog, no user served yet."""
    from sqlalchemy import update

    from backend.db.models import Job, User

    with db.write() as s:
        s.execute(update(Job).where(Job.state != "queued")
                  .values(state="queued", node_id=None, attempts=0, dispatched_at=None))
        s.execute(update(User).values(last_served_at=None))


def _nodes(registry: Any, caps: Any, nodes: int, slots: int, free: int | None) -> None:
    """``nodes`` live nodes; with ``free``, every slot but ``free`` (spread) already held."""
    from backend.ports.registry import Candidate
    from tests.backend.nodes import register

    for node in registry.reserved_nodes():
        for prompt_id in registry.reservations(node):
            registry.release(node, prompt_id)
    for i in range(nodes):
        register(registry, f"pass-{i:03d}", caps, slots=slots, ttl=600)
    if free is None:
        return
    held = nodes * slots - free
    for i in range(held):
        registry.reserve([Candidate(f"pass-{i % nodes:03d}")], f"{'f' * 32}-{i}", 1.0)


def _case(backend: Any, dispatcher: Any, caps: Any, *, nodes: int, slots: int, free: int | None,
          repeats: int) -> tuple[list[float], list[float], int]:
    """Pass times, the backlog read's times alone (the same read the pass makes), jobs placed."""
    from backend.jobs import backlog
    from backend.jobs.dispatcher import BACKLOG_PER_FREE_SLOT

    times: list[float] = []
    reads: list[float] = []
    placed = 0
    slots_free = nodes * slots if free is None else free
    for _ in range(repeats):
        _reset(backend.db)
        _nodes(backend.registry, caps, nodes, slots, free)
        t = time.perf_counter()
        backlog.lines(backend.db, per_user=max(backlog.PER_USER, slots_free),
                      limit=max(BACKLOG_PER_FREE_SLOT * slots_free, backlog.PER_USER))
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        placed = dispatcher.dispatch_once()
        times.append(time.perf_counter() - t)
    return times, reads, placed


@contextlib.contextmanager
def _memory_bus() -> Any:
    from backend.ports.memory_bus import MemoryBus

    bus = MemoryBus()
    try:
        yield bus
    finally:
        bus.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from backend.jobs.dispatcher import Dispatcher
    from tests.backend.nodes import library_capabilities

    workflows = common.library(common.BENCH_WORKFLOWS)
    caps = library_capabilities(workflows)
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(common.postgres_db())
        registry = stack.enter_context(common.redis_registry())
        bus = stack.enter_context(common.rabbit_bus()) if args.bus == "rabbitmq" else stack.enter_context(_memory_bus())
        tmp = Path(tempfile.mkdtemp(prefix="studio-bench-pass-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        backend = common.build_backend(db, bus, registry, tmp, workflows)
        dispatcher = Dispatcher(backend)
        for label, jobs, free in (("all free", args.jobs, None), ("few free", args.jobs, args.few),
                                  ("short backlog", args.short_jobs, args.few)):
            _fill(db, jobs)
            _case(backend, dispatcher, caps, nodes=args.nodes, slots=args.slots, free=free, repeats=1)  # warm caches
            times, reads, placed = _case(backend, dispatcher, caps, nodes=args.nodes, slots=args.slots, free=free,
                                         repeats=args.repeats)
            results[label] = {"jobs": jobs, "placed": placed, "times": times, "reads": reads}
            per = statistics.median(times) / max(placed, 1)
            print(f"{label}: {jobs} waiting, {placed} placed, pass {statistics.median(times) * 1000:.1f} ms "
                  f"({per * 1000:.2f} ms per placed job)", flush=True)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs waiting")
    parser.add_argument("--short-jobs", type=int, default=1_000, help="jobs waiting in the short-backlog case")
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--slots", type=int, default=2, help="slots per node")
    parser.add_argument("--few", type=int, default=10, help="free slots in the few-free cases")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bus", choices=("rabbitmq", "memory"), default="rabbitmq",
                        help="memory: the in-process bus, to see the pass without the broker's confirms")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args(argv)
    common.quiet_logs()
    results = run(args)
    rows = []
    figures: dict[str, float] = {}
    for label, r in results.items():
        median = statistics.median(r["times"])
        per = median / max(r["placed"], 1)
        figures[label] = per
        target = "≤ 5 ms" if label == "all free" else "—"
        ok = common.mark(per <= 0.005) if label == "all free" else ""
        rows.append([label, f"{r['jobs']:,}", r["placed"], f"{median * 1000:.1f} ms",
                     f"**{per * 1000:.2f} ms**", target, ok, f"{statistics.median(r['reads']) * 1000:.1f} ms",
                     ", ".join(f"{t * 1000:.0f}" for t in r["times"])])
    out = common.table(["case", "waiting", "placed", "pass, median", "per placed job", "target", "",
                        "backlog read alone", "each pass (ms)"], rows)
    print(out)
    if not args.no_write:
        cmd = "python -m bench dispatch" + ("" if argv is None else " " + " ".join(argv))
        bus = "RabbitMQ (confirmed publishes)" if args.bus == "rabbitmq" else "the in-process bus"
        common.write_section("dispatch", f"""## 8. Dispatcher pass

`{cmd.strip()}` — {args.nodes} nodes simulated in Redis (heartbeats and capabilities as
an agent writes them, {args.slots} slots each), jobs inserted `queued` for {USERS} users;
one `Dispatcher.dispatch_once()` per measurement against PostgreSQL, Redis and {bus},
{args.repeats} repeats per case with the backlog and registry reset
in between. {common.machine()}.

{out}
""")
    return figures


if __name__ == "__main__":
    main()
