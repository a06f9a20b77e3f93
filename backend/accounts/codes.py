"""Redeem codes: batches of single-use codes worth some credits.

Only a SHA-256 of each normalized code is stored, so a copy of the database does not
leak unredeemed codes. Codes are case-insensitive and dashes/spaces are ignored. Every
attempt is claimed from two limits before the code is looked at (:mod:`.throttle`):
per user (``max_failures`` per window) and per client address (``ADDRESS_FACTOR`` times
that, for guessers with many accounts); a code that works gives its claims back. Past
either limit redeeming is refused until the window ends, which makes guessing a
16-character code hopeless, even with parallel requests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from backend.accounts import ledger, throttle
from backend.db import Database, rows_changed
from backend.db.models import RedeemCode, User, utcnow
from backend.errors import InvalidParameter, NotFound, RateLimited, RedeemError

# No 0/O, 1/I/L: codes are read from screens and typed by hand.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 16
MAX_BATCH = 10_000
#: An address may make this many times a user's wrong guesses per window.
ADDRESS_FACTOR = 4
_WHAT = ("wrong codes", "错误兑换")


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
    db: Database, user_id: int, code: str, *, max_failures: int = 5, window_seconds: int = 900,
    address: str | None = None,
) -> int:
    """Credit the code's value to the user; returns the credits added.

    ``address`` is the client's address when the request came over the network.
    """
    with db.read() as s:
        if s.get(User, user_id) is None:
            raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
    claims = _claim(db, user_id, address, max_failures=max_failures, window_seconds=window_seconds)
    now = utcnow()
    wanted = code_hash(code)
    with db.write() as s:
        row = s.scalar(select(RedeemCode).where(RedeemCode.code_hash == wanted))
        taken = rows_changed(s.execute(
            update(RedeemCode)
            .where(
                RedeemCode.code_hash == wanted,
                RedeemCode.redeemed_by.is_(None),
                (RedeemCode.expires_at.is_(None)) | (RedeemCode.expires_at > now),
            )
            .values(redeemed_by=user_id, redeemed_at=now)
        ))
        if taken == 1 and row is not None:
            ledger.credit(s, user_id, row.credits, kind="redeem", code_id=row.id, note=f"code …{row.hint}")
            credits = row.credits
        else:
            credits = 0
    if credits:
        for key in claims:
            throttle.release(db, key)
        return credits
    if row is None:
        raise RedeemError("This code does not exist; check for typos.", zh="积分码不存在，请检查输入。")
    if row.redeemed_by is not None:
        raise RedeemError("This code has already been used.", zh="该积分码已被使用。")
    raise RedeemError("This code has expired.", zh="该积分码已过期。")


def check_invite(db: Database, code: str, *, address: str | None, max_failures: int = 5,
                 window_seconds: int = 900) -> None:
    """Refuse an invite code (any unused redeem code) that cannot be redeemed now.

    Checking a code is a guess like redeeming one, so it is claimed from the address's
    limit (there is no user yet); a valid code gives the claim back.
    """
    if not code.strip():
        raise InvalidParameter("Sign-up needs an invite code.", zh="注册需要邀请码。", param="invite")
    claims = _claim(db, None, address, max_failures=max_failures, window_seconds=window_seconds)
    now = utcnow()
    with db.read() as s:
        row = s.scalar(select(RedeemCode).where(RedeemCode.code_hash == code_hash(code)))
    if row is None or row.redeemed_by is not None or (row.expires_at is not None and row.expires_at <= now):
        raise RedeemError("This invite code is not valid.", zh="邀请码无效。")
    for key in claims:
        throttle.release(db, key)


def _claim(db: Database, user_id: int | None, address: str | None, *, max_failures: int,
           window_seconds: int) -> list[str]:
    """Claim one guess from the user's and the address's limits; the keys claimed."""
    window = dt.timedelta(seconds=window_seconds)
    limits = []
    if user_id is not None:
        limits.append((f"redeem:user:{user_id}", throttle.Limit(max_failures, window, what=_WHAT)))
    if address:
        limits.append((f"redeem:addr:{throttle.address_key(address)}",
                       throttle.Limit(ADDRESS_FACTOR * max_failures, window, what=_WHAT)))
    claimed: list[str] = []
    try:
        for key, limit in limits:
            throttle.claim(db, key, limit)
            claimed.append(key)
    except RateLimited:
        for key in claimed:
            throttle.release(db, key)
        raise
    return claimed


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
