"""Rate limits that hold under parallel requests and across replicas.

Every limited thing — a name signing in from an address, an address signing in at all,
a user redeeming codes, an address creating accounts — has a row in ``throttles`` keyed
by what it counts. An attempt is *claimed* before it is checked: one write transaction
inserts the row if missing (``INSERT ... ON CONFLICT DO NOTHING``), locks it (``SELECT
... FOR UPDATE`` on PostgreSQL; SQLite's writing transactions start with ``BEGIN
IMMEDIATE`` and so are serial already), decides, and counts the attempt. Twelve wrong
passwords sent at once therefore meet a counter that moves under them: only the allowed
number is checked at all. An attempt that turns out to be fine gives its claim back
(:func:`release`, or :func:`reset` for a backoff series).

A :class:`Limit` either refuses attempts over ``allowed`` until its window ends, or
(``backoff``) lets ``allowed`` through and then makes each further attempt wait twice as
long as the previous (capped), or (``refuse=False``) only counts, so the caller can slow
attempts down without ever refusing them.

Addresses are keyed as the client's IPv4 address or its IPv6 /64, since one IPv6 host
usually holds a whole /64.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.db import Database, rows_changed
from backend.db.models import Throttle, utcnow
from backend.errors import RateLimited


@dataclass(frozen=True)
class Limit:
    """How many attempts a key may make per ``window``; see the module docstring."""

    allowed: int
    window: dt.timedelta
    backoff: bool = False
    refuse: bool = True
    #: The wait after the first attempt over ``allowed`` of a backoff series; it doubles.
    first_delay: dt.timedelta = dt.timedelta(seconds=1)
    #: The longest wait between attempts of a backoff series.
    max_delay: dt.timedelta = dt.timedelta(minutes=5)
    #: What was limited, for the message: "sign-in attempts", "wrong codes", ...
    what: tuple[str, str] = ("attempts", "尝试")

    def delay_after(self, count: int) -> dt.timedelta:
        """The wait before the next attempt once ``count`` attempts are counted."""
        if not self.backoff or count < self.allowed:
            return dt.timedelta(0)
        seconds = min(self.first_delay.total_seconds() * 2.0 ** (count - self.allowed), self.max_delay.total_seconds())
        return dt.timedelta(seconds=seconds)


def address_key(host: str | None) -> str:
    """The part of a client address a limit counts: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def claim(db: Database, key: str, limit: Limit, *, now: dt.datetime | None = None) -> int:
    """Count one attempt of ``key``; the attempts counted in the window, this one included.

    Raises :class:`~backend.errors.RateLimited` (nothing counted) when ``limit`` refuses it.
    """
    with db.write() as s:
        return claim_in(s, key, limit, now=now)


def claim_in(s: Session, key: str, limit: Limit, *, now: dt.datetime | None = None) -> int:
    """:func:`claim` in the caller's writing transaction: the attempt counts only if that
    transaction commits (a submit counts only when its job is made)."""
    row = lock(s, key, now=now)
    # The time of the decision is read once the row is ours: an attempt that waited for
    # the lock must not be judged by a clock read before the others went first.
    now = now or utcnow()
    if now - row.window_start >= limit.window:
        row.count, row.window_start, row.next_at = 0, now, now
    if now < row.next_at:
        raise _limited(limit, (row.next_at - now).total_seconds())
    if limit.refuse and not limit.backoff and row.count >= limit.allowed:
        raise _limited(limit, (row.window_start + limit.window - now).total_seconds())
    row.count += 1
    delay = limit.delay_after(row.count)
    if delay:  # free attempts leave it alone: replicas' clocks differ by a little
        row.next_at = now + delay
    s.flush()
    return row.count


def lock(s: Session, key: str, *, now: dt.datetime | None = None) -> Throttle:
    """``key``'s row, made if missing and locked until the caller's transaction ends
    (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's writing transactions are serial)."""
    dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
    start = now or utcnow()
    s.execute(dialect.insert(Throttle).values(key=key, count=0, window_start=start, next_at=start)
              .on_conflict_do_nothing(index_elements=["key"]))
    return s.execute(select(Throttle).where(Throttle.key == key).with_for_update()).scalar_one()


def release(db: Database, key: str) -> None:
    """Give back one claimed attempt (it succeeded, so it does not count against the key)."""
    with db.write() as s:
        s.execute(update(Throttle).where(Throttle.key == key, Throttle.count > 0).values(count=Throttle.count - 1))


def reset(db: Database, key: str) -> None:
    """Forget ``key``'s attempts (a backoff series ended well)."""
    with db.write() as s:
        s.execute(delete(Throttle).where(Throttle.key == key))


def count(db: Database, key: str, limit: Limit, *, now: dt.datetime | None = None) -> int:
    """The attempts ``key`` made in its current window (0 once the window is over)."""
    now = now or utcnow()
    with db.read() as s:
        row = s.execute(select(Throttle.count, Throttle.window_start).where(Throttle.key == key)).first()
    if row is None:
        return 0
    attempts, window_start = row
    return 0 if now - window_start >= limit.window else int(attempts)


def purge(db: Database, *, older_than: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Delete rows whose window started more than ``older_than`` ago and that hold no
    pending backoff; returns how many. Run it now and then (the studio does, hourly)."""
    now = now or utcnow()
    cutoff = now - older_than
    with db.write() as s:
        return rows_changed(s.execute(delete(Throttle).where(Throttle.window_start < cutoff, Throttle.next_at < now)))


def _limited(limit: Limit, retry_after: float) -> RateLimited:
    retry_after = max(retry_after, 1.0)
    en, zh = limit.what
    if retry_after < 120:
        seconds = round(retry_after)
        return RateLimited(f"Too many {en}. Try again in {seconds} s.",
                           zh=f"{zh}次数过多，请 {seconds} 秒后再试。", retry_after=retry_after)
    minutes = round(retry_after / 60)
    return RateLimited(f"Too many {en}. Try again in about {minutes} minutes.",
                       zh=f"{zh}次数过多，请约 {minutes} 分钟后再试。", retry_after=retry_after)
