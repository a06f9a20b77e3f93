"""Benchmark 6: the database pool's ``pre_ping`` against reconnect-on-error.

``python -m bench reconnect [--transactions N] [--runs R] [--threads T]``

After a PostgreSQL restart every pooled connection is dead. Two ways to cope:

- **pre_ping** (what ``backend/db/database.py`` does): the pool checks each connection
  with a round trip when it is taken, and replaces a dead one unseen; every transaction
  pays that round trip, restart or not.
- **reconnect on error**: no check; the first transaction on each dead connection fails
  (``DatabaseUnavailable``: "try again in a moment"), SQLAlchemy then invalidates the pool,
  and the next attempt reconnects.

Measured on a private PostgreSQL the benchmark starts and restarts itself (never the
machine's shared one): the cost of a small read transaction (``SELECT 1``) with and without
the ping, in alternating runs; and, after ``pg_ctl stop -m fast`` / ``start`` with a warm
pool, how many of ``threads`` concurrent transactions fail and how long until all succeed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from typing import Any

from sqlalchemy import text

from . import common


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench reconnect")
    parser.add_argument("--transactions", type=int, default=2000, help="transactions per run (default 2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode, alternating (default 3)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent transactions after the restart (default 8)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/performance.md alone")
    args = parser.parse_args(argv)

    # The private servers of the test suite: this benchmark restarts its PostgreSQL.
    sys.path.insert(0, str(common.REPO))
    from tests import private_servers

    from backend.db import Database
    from backend.errors import DatabaseUnavailable

    started = time.monotonic()
    with private_servers.private_servers("postgres") as servers:
        postgres = servers.postgres
        assert postgres is not None
        dbs = {"pre_ping": Database(postgres.url, pre_ping=True), "reconnect on error": Database(postgres.url, pre_ping=False)}
        latency = {mode: common.Runs() for mode in dbs}
        for _ in range(args.runs):
            for mode, db in dbs.items():  # alternating, so load changes hit both alike
                latency[mode].add(_transactions(db, args.transactions))

        restart: dict[str, dict[str, float]] = {}
        for mode, db in dbs.items():
            db.dispose()  # no connection left over from the other mode's restart
            _warm(db, args.threads)
            postgres.stop("fast")
            postgres.start()
            restart[mode] = _after_restart(db, args.threads, DatabaseUnavailable)
        for db in dbs.values():
            db.dispose()

    ping, plain = latency["pre_ping"], latency["reconnect on error"]
    rows = [
        ["small read transaction, p50", common.ms(ping.p(50)), common.ms(plain.p(50)),
         common.ms(ping.p(50) - plain.p(50))],
        ["small read transaction, p99", common.ms(ping.p(99)), common.ms(plain.p(99)),
         common.ms(ping.p(99) - plain.p(99))],
        [f"after a restart: transactions failed (of {args.threads} at once)", f"{restart['pre_ping']['failed']:.0f}",
         f"{restart['reconnect on error']['failed']:.0f}", ""],
        ["after a restart: until all succeeded", common.ms(restart["pre_ping"]["seconds"]),
         common.ms(restart["reconnect on error"]["seconds"]), ""],
    ]
    body = f"""## 6. Database reconnects: pool pre-ping or reconnect on error

`python -m bench reconnect` — on a private PostgreSQL 15 that the benchmark starts and
restarts (the test suite's `tests/private_servers.py`), {args.runs} alternating runs of
{args.transactions} `SELECT 1` read transactions per mode through `backend.db.Database`,
then a warm pool, `pg_ctl stop -m fast` + `start`, and {args.threads} transactions at once.
Whole run {time.monotonic() - started:.0f} s. {common.machine()}.

{common.table(["figure", "pre_ping (chosen)", "reconnect on error", "ping costs"], rows)}

The ping is one extra round trip per transaction: on this machine's loopback
{common.ms(ping.p(50) - plain.p(50))} at the median, small next to a transaction that does
real work (the submit path's p50 is around 50 ms, section 1); across a network it costs
one network round trip. Without it, the first requests after a restart fail with "try
again in a moment" ({restart['reconnect on error']['failed']:.0f} of {args.threads} here: once
SQLAlchemy sees one dead connection it discards the rest of the pool, so later requests
reconnect). `pre_ping` stays: a restart or failover then costs creators nothing
({restart['pre_ping']['failed']:.0f} failed), and its price is small and steady.
"""
    print(body)
    if not args.no_write:
        common.write_section("reconnect", body)
    return {"ping_p50": ping.p(50), "plain_p50": plain.p(50), "restart": restart}


def _transactions(db: Any, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        with db.read() as s:
            s.execute(text("SELECT 1")).scalar_one()
        samples.append(time.perf_counter() - began)
    return samples


def _warm(db: Any, threads: int) -> None:
    """Fill the pool with ``threads`` connections (all checked out at once, then returned)."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: _hold(db), range(threads)))


def _hold(db: Any) -> None:
    with db.read() as s:
        s.execute(text("SELECT pg_sleep(0.05)"))


def _after_restart(db: Any, threads: int, unavailable: type[Exception]) -> dict[str, float]:
    """Run ``threads`` transactions at once, again and again, until a round has no failure."""
    failed = 0
    began = time.monotonic()

    def attempt(_: int) -> bool:
        try:
            _hold(db)
            return True
        except unavailable:
            return False

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        while True:
            results = list(pool.map(attempt, range(threads)))
            failed += results.count(False)
            if all(results):
                return {"failed": failed, "seconds": time.monotonic() - began}
