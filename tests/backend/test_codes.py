"""Redeem codes: single use, case-insensitive, expiry, wrong-guess limit."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, update

from backend.accounts import codes, ledger
from backend.db import Database
from backend.db.models import RedeemCode, Throttle, User
from backend.errors import RateLimited, RedeemError

from .helpers import make_user


def test_batch_codes_are_unique_and_only_hashes_are_stored(db: Database) -> None:
    batch = codes.create_batch(db, 20, 15, expires_days=7)
    assert len(set(batch.codes)) == 20
    assert all(len(c) == 19 and c.count("-") == 3 for c in batch.codes)
    with db.read() as s:
        stored = list(s.scalars(select(RedeemCode)))
    plain = {codes.normalize(c) for c in batch.codes}
    assert not any(row.code_hash in plain for row in stored)
    assert {row.code_hash for row in stored} == {codes.code_hash(c) for c in batch.codes}
    assert codes.list_batches(db) == [
        {"batch": batch.batch, "credits": 15, "codes": 20, "redeemed": 0, "expires_at": stored[0].expires_at}
    ]


def test_redeem_once_case_insensitively(db: Database) -> None:
    user, other = make_user(db, "amy"), make_user(db, "bo")
    (code,) = codes.create_batch(db, 1, 25).codes
    assert codes.redeem(db, user.id, code.lower().replace("-", " ")) == 25
    with pytest.raises(RedeemError, match="already been used"):
        codes.redeem(db, other.id, code)
    with db.read() as s:
        assert ledger.balance(s, user.id) == 25 and ledger.balance(s, other.id) == 0
    assert ledger.verify(db) == []


def test_concurrent_redeems_of_one_code_credit_once(db: Database) -> None:
    users = [make_user(db, f"u{i}") for i in range(8)]
    (code,) = codes.create_batch(db, 1, 10).codes
    barrier = threading.Barrier(len(users))

    def attempt(user: User) -> int:
        barrier.wait()
        try:
            return codes.redeem(db, user.id, code)
        except RedeemError:
            return 0

    with ThreadPoolExecutor(len(users)) as pool:
        assert sorted(pool.map(attempt, users)) == [0] * 7 + [10]
    assert ledger.verify(db) == []


def test_expired_code_is_refused(db: Database) -> None:
    user = make_user(db, "cy")
    (code,) = codes.create_batch(db, 1, 10, expires_days=1).codes
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    with db.write() as s:
        s.execute(update(RedeemCode).values(expires_at=past))
    with pytest.raises(RedeemError, match="expired") as err:
        codes.redeem(db, user.id, code)
    assert err.value.zh == "该积分码已过期。"


def test_wrong_guesses_are_rate_limited_per_user(db: Database) -> None:
    guesser, honest = make_user(db, "dee"), make_user(db, "eli")
    (code,) = codes.create_batch(db, 1, 10).codes
    for _ in range(3):
        with pytest.raises(RedeemError, match="does not exist"):
            codes.redeem(db, guesser.id, "AAAA-BBBB-CCCC-DDDD", max_failures=3)
    with pytest.raises(RateLimited, match="Too many wrong codes") as err:
        codes.redeem(db, guesser.id, code, max_failures=3)  # even the right code waits
    assert 0 < err.value.retry_after <= 900
    assert codes.redeem(db, honest.id, code, max_failures=3) == 10


def test_window_expiry_lifts_the_limit(db: Database) -> None:
    user = make_user(db, "fin")
    (code,) = codes.create_batch(db, 1, 5).codes
    for _ in range(2):
        with pytest.raises(RedeemError):
            codes.redeem(db, user.id, "nope", max_failures=2)
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with db.write() as s:
        s.execute(update(Throttle).where(Throttle.key == f"redeem:user:{user.id}").values(window_start=long_ago))
    assert codes.redeem(db, user.id, code, max_failures=2) == 5


@pytest.mark.parametrize("count,credits", [(0, 5), (10_001, 5), (1, 0), (1, -3)])
def test_bad_batches_are_refused(db: Database, count: int, credits: int) -> None:
    from backend.errors import InvalidParameter

    with pytest.raises(InvalidParameter):
        codes.create_batch(db, count, credits)
