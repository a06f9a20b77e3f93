"""Rate limits under parallel requests, on SQLite and PostgreSQL: sign-in, redeem codes,
sign-up. The attempts race through real threads and a barrier; the counters must not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backend import accounts
from backend.accounts import codes, ledger, throttle
from backend.config import Settings
from backend.db import Database
from backend.errors import AuthError, RateLimited, RedeemError
from backend.accounts.signin import FREE_FAILURES, NAME_CEILING, sign_in, sign_in_delay, sign_up

from .helpers import CHEAP_HASHER, PASSWORD, make_user

PARALLEL = 16
ATTACKER, OWNER = "198.51.100.7", "203.0.113.20"


def race(n: int, attempt: Callable[[int], object]) -> list[object]:
    """Run ``attempt(i)`` for i < n in n threads released at once; each result or exception."""
    barrier = threading.Barrier(n)

    def run(i: int) -> object:
        barrier.wait()
        try:
            return attempt(i)
        except Exception as exc:  # noqa: BLE001 - the outcome is what is counted
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def kinds(outcomes: list[object]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for outcome in outcomes:
        name = type(outcome).__name__
        counted[name] = counted.get(name, 0) + 1
    return counted


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, welcome_credits=100, signups_per_address=3, login_failures_per_address=8,
                    login_backoff_seconds=600)  # no test outlives the first wait


def test_parallel_wrong_passwords_only_the_allowed_number_is_checked(db: Database, settings: Settings) -> None:
    make_user(db, "target")
    outcomes = race(PARALLEL, lambda i: sign_in(db, settings, "target", f"guess number {i}", address=ATTACKER,
                                                 hasher=CHEAP_HASHER))
    assert kinds(outcomes) == {"AuthError": FREE_FAILURES, "RateLimited": PARALLEL - FREE_FAILURES}


def test_the_owner_signs_in_from_elsewhere_while_an_attacker_is_throttled(db: Database, settings: Settings) -> None:
    make_user(db, "owner")
    for i in range(FREE_FAILURES):
        with pytest.raises(AuthError):
            sign_in(db, settings, "owner", f"wrong {i}", address=ATTACKER, hasher=CHEAP_HASHER)
    with pytest.raises(RateLimited):
        sign_in(db, settings, "owner", PASSWORD, address=ATTACKER, hasher=CHEAP_HASHER)  # refused unchecked
    assert sign_in(db, settings, "owner", PASSWORD, address=OWNER, hasher=CHEAP_HASHER).name == "owner"


def test_a_name_past_its_ceiling_is_slowed_never_locked(db: Database, settings: Settings) -> None:
    make_user(db, "famous")
    many = dataclasses.replace(settings, login_failures_per_address=10_000)
    addresses = [f"192.0.2.{i}" for i in range(NAME_CEILING.allowed)]  # a botnet, one guess each
    for address in addresses:
        with pytest.raises(AuthError):
            sign_in(db, many, "famous", "not the password", address=address, hasher=CHEAP_HASHER)
    assert sign_in_delay(db, "famous") > 0  # every further attempt waits
    assert sign_in_delay(db, "someone-else") == 0
    assert sign_in(db, many, "famous", PASSWORD, address=OWNER, hasher=CHEAP_HASHER).name == "famous"


def test_spraying_names_from_one_address_is_refused(db: Database, settings: Settings) -> None:
    for i in range(settings.login_failures_per_address):
        with pytest.raises(AuthError):
            sign_in(db, settings, f"name{i}", "password guess", address=ATTACKER, hasher=CHEAP_HASHER)
    with pytest.raises(RateLimited, match="your network"):
        sign_in(db, settings, "yet-another", "password guess", address=ATTACKER, hasher=CHEAP_HASHER)
    make_user(db, "bystander")
    assert sign_in(db, settings, "bystander", PASSWORD, address=OWNER, hasher=CHEAP_HASHER)


def test_parallel_spraying_is_refused_at_the_limit(db: Database, settings: Settings) -> None:
    outcomes = race(PARALLEL, lambda i: sign_in(db, settings, f"spray{i}", "password guess", address=ATTACKER,
                                                 hasher=CHEAP_HASHER))
    assert kinds(outcomes) == {"AuthError": settings.login_failures_per_address,
                               "RateLimited": PARALLEL - settings.login_failures_per_address}


def test_successful_sign_ins_do_not_use_up_the_address_budget(db: Database, settings: Settings) -> None:
    make_user(db, "office")
    for _ in range(settings.login_failures_per_address * 2):
        sign_in(db, settings, "office", PASSWORD, address=OWNER, hasher=CHEAP_HASHER)


def test_ipv6_neighbours_share_one_limit() -> None:
    assert throttle.address_key("2001:db8::1") == throttle.address_key("2001:db8::ffff") == "2001:db8::/64"
    assert throttle.address_key("2001:db8:0:1::1") != throttle.address_key("2001:db8::1")
    assert throttle.address_key("::ffff:203.0.113.9") == "203.0.113.9"


def test_parallel_wrong_codes_only_the_allowed_number_is_checked(db: Database) -> None:
    user = make_user(db, "coder")
    outcomes = race(PARALLEL, lambda i: codes.redeem(db, user.id, f"WRONG-CODE-{i:04d}", max_failures=4))
    assert kinds(outcomes) == {"RedeemError": 4, "RateLimited": PARALLEL - 4}


def test_wrong_codes_from_many_accounts_on_one_address_are_refused(db: Database) -> None:
    users = [make_user(db, f"sock{i}") for i in range(codes.ADDRESS_FACTOR + 1)]
    for user in users[:-1]:
        for _ in range(2):
            with pytest.raises(RedeemError):
                codes.redeem(db, user.id, "NOPE-NOPE", max_failures=2, address=ATTACKER)
    with pytest.raises(RateLimited):
        codes.redeem(db, users[-1].id, "NOPE-NOPE", max_failures=2, address=ATTACKER)
    (code,) = codes.create_batch(db, 1, 7).codes
    assert codes.redeem(db, users[-1].id, code, max_failures=2, address=OWNER) == 7
    assert ledger.verify(db) == []


def test_parallel_sign_ups_from_one_address_stop_at_the_limit(db: Database, settings: Settings) -> None:
    outcomes = race(PARALLEL, lambda i: sign_up(db, settings, f"new{i}", PASSWORD, address=ATTACKER,
                                                 hasher=CHEAP_HASHER))
    made = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(made) == settings.signups_per_address
    assert kinds(outcomes)["RateLimited"] == PARALLEL - settings.signups_per_address
    assert len(accounts.list_users(db)) == settings.signups_per_address
    assert sign_up(db, settings, "elsewhere", PASSWORD, address=OWNER, hasher=CHEAP_HASHER)
    assert ledger.verify(db) == []


def test_a_refused_sign_up_does_not_count(db: Database, settings: Settings) -> None:
    for _ in range(settings.signups_per_address + 2):
        with pytest.raises(Exception, match="password"):
            sign_up(db, settings, "weakling", "aaaaaaaa", address=ATTACKER, hasher=CHEAP_HASHER)
    assert sign_up(db, settings, "weakling", PASSWORD, address=ATTACKER, hasher=CHEAP_HASHER)


def test_invite_codes_are_guesses_too(db: Database, settings: Settings) -> None:
    from backend.accounts import app_settings

    app_settings.set_signup(db, mode="invite", welcome=0)
    limit = codes.ADDRESS_FACTOR * settings.redeem_max_failures
    for i in range(limit):
        with pytest.raises(RedeemError):
            sign_up(db, settings, f"inv{i}", PASSWORD, invite_code=f"GUESS-{i:04d}", address=ATTACKER,
                    hasher=CHEAP_HASHER)
    (code,) = codes.create_batch(db, 1, 3).codes
    with pytest.raises(RateLimited):  # even the right code waits
        sign_up(db, settings, "invited", PASSWORD, invite_code=code, address=ATTACKER, hasher=CHEAP_HASHER)
    assert sign_up(db, settings, "invited", PASSWORD, invite_code=code, address=OWNER, hasher=CHEAP_HASHER)


def test_windows_end_and_old_rows_are_purged(db: Database) -> None:
    limit = throttle.Limit(2, dt.timedelta(minutes=15))
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert [throttle.claim(db, "k", limit, now=start) for _ in range(2)] == [1, 2]
    with pytest.raises(RateLimited) as refused:
        throttle.claim(db, "k", limit, now=start + dt.timedelta(minutes=5))
    assert refused.value.retry_after == pytest.approx(600)
    assert throttle.claim(db, "k", limit, now=start + dt.timedelta(minutes=16)) == 1
    assert throttle.purge(db, older_than=dt.timedelta(hours=1), now=start + dt.timedelta(hours=2)) == 1
    assert throttle.count(db, "k", limit, now=start + dt.timedelta(hours=2)) == 0


def test_backoff_doubles_and_is_capped(db: Database) -> None:
    limit = throttle.Limit(2, dt.timedelta(hours=1), backoff=True, max_delay=dt.timedelta(seconds=30))
    assert [limit.delay_after(n).total_seconds() for n in (1, 2, 3, 4, 9)] == [0, 1, 2, 4, 30]
    slower = dataclasses.replace(limit, first_delay=dt.timedelta(seconds=5))
    assert [slower.delay_after(n).total_seconds() for n in (1, 2, 3, 4)] == [0, 5, 10, 20]
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for _ in range(2):
        throttle.claim(db, "b", limit, now=now)
    with pytest.raises(RateLimited):
        throttle.claim(db, "b", limit, now=now)
    assert throttle.claim(db, "b", limit, now=now + dt.timedelta(seconds=1)) == 3
