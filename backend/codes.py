"""Redeem codes: batches of single-use codes worth some credits.

Only a SHA-256 of each normalized code is stored, so a copy of the database does not
leak unredeemed codes. Codes are case-insensitive and dashes/spaces are ignored. Wrong
guesses are counted per user in a sliding window; past the limit, redeeming is refused
until the window ends, which makes guessing a 16-character code hopeless.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import ledger
from .db import Database
from .db.models import RedeemCode, User, utcnow
from .errors import InvalidParameter, NotFound, RateLimited, RedeemError

# No 0/O, 1/I/L: codes are read from screens and typed by hand.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 16
MAX_BATCH = 10_000


def normalize(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch not in " -\t")


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


def format_code(raw: str) -> str:
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


@dataclass(frozen=True)
class Batch:
    batch: str
    credits: int
    expires_at: dt.datetime | None
    codes: list[str]


def create_batch(
    db: Database, count: int, credits: int, *, expires_days: float | None = None, created_by: int | None = None
) -> Batch:
    """Create ``count`` codes; the plain codes are returned once and never stored."""
    if not 1 <= count <= MAX_BATCH:
        raise InvalidParameter(f"A batch has 1–{MAX_BATCH} codes.", param="count")
    if credits <= 0:
        raise InvalidParameter("A code must be worth a positive number of credits.", param="credits")
    if expires_days is not None and expires_days <= 0:
        raise InvalidParameter("The expiry must be a positive number of days.", param="expires_days")
    now = utcnow()
    expires_at = now + dt.timedelta(days=expires_days) if expires_days else None
    batch = now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    raw_codes = ["".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH)) for _ in range(count)]
    with db.write() as s:
        s.add_all(
            RedeemCode(
                code_hash=code_hash(raw),
                hint=raw[-4:],
                batch=batch,
                credits=credits,
                created_by=created_by,
                created_at=now,
                expires_at=expires_at,
            )
            for raw in raw_codes
        )
    return Batch(batch=batch, credits=credits, expires_at=expires_at, codes=[format_code(c) for c in raw_codes])


def redeem(
    db: Database, user_id: int, code: str, *, max_failures: int = 5, window_seconds: int = 900
) -> int:
    """Credit the code's value to the user; returns the credits added."""
    now = utcnow()
    _check_rate(db, user_id, now, max_failures, window_seconds)
    wanted = code_hash(code)
    with db.write() as s:
        row = s.scalar(select(RedeemCode).where(RedeemCode.code_hash == wanted))
        taken = s.execute(
            update(RedeemCode)
            .where(
                RedeemCode.code_hash == wanted,
                RedeemCode.redeemed_by.is_(None),
                (RedeemCode.expires_at.is_(None)) | (RedeemCode.expires_at > now),
            )
            .values(redeemed_by=user_id, redeemed_at=now)
        ).rowcount
        if taken == 1 and row is not None:
            ledger.credit(s, user_id, row.credits, kind="redeem", code_id=row.id, note=f"code …{row.hint}")
            s.execute(update(User).where(User.id == user_id).values(redeem_failures=0, redeem_window_start=None))
            return row.credits
        _count_failure(s, user_id, now, window_seconds)
    if row is None:
        raise RedeemError("This code does not exist; check for typos.", zh="积分码不存在，请检查输入。")
    if row.redeemed_by is not None:
        raise RedeemError("This code has already been used.", zh="该积分码已被使用。")
    raise RedeemError("This code has expired.", zh="该积分码已过期。")


def _check_rate(db: Database, user_id: int, now: dt.datetime, max_failures: int, window_seconds: int) -> None:
    with db.read() as s:
        user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    start = user.redeem_window_start
    if start is None or user.redeem_failures < max_failures:
        return
    retry_after = (start + dt.timedelta(seconds=window_seconds) - now).total_seconds()
    if retry_after > 0:
        minutes = max(1, round(retry_after / 60))
        raise RateLimited(
            f"Too many wrong codes. Try again in about {minutes} minute(s).",
            zh=f"错误次数过多，请约 {minutes} 分钟后再试。",
            retry_after=retry_after,
        )


def _count_failure(s: Session, user_id: int, now: dt.datetime, window_seconds: int) -> None:
    user = s.get(User, user_id)
    assert user is not None
    start = user.redeem_window_start
    if start is None or (now - start).total_seconds() >= window_seconds:
        user.redeem_window_start, user.redeem_failures = now, 1
    else:
        user.redeem_failures += 1


def list_batches(db: Database) -> list[dict[str, object]]:
    """Per batch: credits, codes issued, redeemed, expiry."""
    with db.read() as s:
        rows = s.execute(select(RedeemCode).order_by(RedeemCode.id))
        batches: dict[str, dict[str, object]] = {}
        for (code,) in rows:
            b = batches.setdefault(
                code.batch,
                {"batch": code.batch, "credits": code.credits, "codes": 0, "redeemed": 0, "expires_at": code.expires_at},
            )
            b["codes"] = int(b["codes"]) + 1  # type: ignore[call-overload]
            b["redeemed"] = int(b["redeemed"]) + (code.redeemed_by is not None)  # type: ignore[call-overload]
    return list(batches.values())
