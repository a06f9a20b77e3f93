"""Per-user limits and API tokens on SQLite and PostgreSQL: each limit refuses exactly at
its bound and names itself; tokens resolve, expire, and die with revocation or with
their owner's admin role."""

from __future__ import annotations

import datetime as dt

import pytest

from backend import accounts, jobs
from backend.accounts import tokens
from backend.config import Settings
from backend.db import Database
from backend.errors import AuthError, ConfigError, LimitReached, PermissionDenied
from backend.jobs import limits

from .helpers import charged_job, make_user

SETTINGS = Settings()


def test_waiting_jobs_and_daily_spend(db: Database) -> None:
    user = make_user(db, "lim", credits=100)
    limits.set_override(db, user.id, "max_waiting_jobs", 2)
    limits.set_override(db, user.id, "daily_spend_cap", 25)
    for _ in range(2):
        limits.check_submit(db, SETTINGS, user.id, 10)
        charged_job(db, user, 10)
    with pytest.raises(LimitReached) as caught:
        limits.check_submit(db, SETTINGS, user.id, 1)
    assert caught.value.limit == "max_waiting_jobs" and caught.value.retry_after > 0
    limits.set_override(db, user.id, "max_waiting_jobs", None)
    limits.check_submit(db, SETTINGS, user.id, 5)  # 20 + 5 is exactly the cap
    with pytest.raises(LimitReached) as caught:
        limits.check_submit(db, SETTINGS, user.id, 6)
    assert caught.value.limit == "daily_spend_cap" and 0 < caught.value.retry_after <= 86_400
    first = jobs.list_for_user(db, user.id)[0]
    jobs.cancel(db, first.id, by_user=user.id)  # a refund gives the spending back
    limits.check_submit(db, SETTINGS, user.id, 15)


def test_submits_per_minute_and_the_role_defaults(db: Database) -> None:
    settings = Settings(submits_per_minute=2)
    creator, admin = make_user(db, "fast"), make_user(db, "boss", role="admin")
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    for _ in range(2):
        limits.check_submit(db, settings, creator.id, 0, now=now)
    with pytest.raises(LimitReached) as caught:
        limits.check_submit(db, settings, creator.id, 0, now=now)
    assert caught.value.limit == "submits_per_minute"
    limits.check_submit(db, settings, creator.id, 0, now=now + dt.timedelta(seconds=61))
    for _ in range(5):  # administrators have no limit unless one is set for them
        limits.check_submit(db, settings, admin.id, 0, now=now)
    assert limits.effective(db, settings, creator.id)["submits_per_minute"] == 2


def test_each_role_has_its_defaults_and_a_user_override_wins(db: Database) -> None:
    settings = Settings().with_values({"max_waiting_jobs": 1, "admin_max_waiting_jobs": 3, "admin_daily_spend_cap": 50})
    creator, admin = make_user(db, "maker", credits=100), make_user(db, "chief", credits=100, role="admin")
    assert limits.effective(db, settings, creator.id)["max_waiting_jobs"] == 1
    assert limits.effective(db, settings, admin.id) == {**dict.fromkeys(limits.NAMES, 0), "max_waiting_jobs": 3,
                                                        "daily_spend_cap": 50}
    for _ in range(3):
        limits.check_submit(db, settings, admin.id, 1)
        charged_job(db, admin, 1)
    with pytest.raises(LimitReached) as caught:
        limits.check_submit(db, settings, admin.id, 1)
    assert caught.value.limit == "max_waiting_jobs"
    limits.set_override(db, admin.id, "max_waiting_jobs", 0)  # this administrator: no limit
    limits.check_submit(db, settings, admin.id, 1)
    charged_job(db, creator, 1)
    with pytest.raises(LimitReached):
        limits.check_submit(db, settings, creator.id, 1)
    with pytest.raises(ConfigError, match="admin_storage_quota_mb"):
        Settings().with_values({"admin_storage_quota_mb": -1})


def test_tokens(db: Database) -> None:
    user = make_user(db, "tok")
    secret, info = tokens.create(db, user.id, "bot", scope="read",
                                 expires_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    who = tokens.resolve(db, secret)
    assert (who.user_id, who.scope, who.token_id) == (user.id, "read", info.id)
    assert secret not in repr(tokens.list_for_user(db, user.id))
    with pytest.raises(PermissionDenied):
        tokens.create(db, user.id, "x", scope="admin")
    tokens.revoke(db, user.id, info.id)
    with pytest.raises(AuthError):
        tokens.resolve(db, secret)
    boss = make_user(db, "tokboss", role="admin")
    admin_secret, _ = tokens.create(db, boss.id, "ops", scope="admin")
    assert tokens.resolve(db, admin_secret).is_admin
    accounts.set_role(db, "tokboss", "creator")
    with pytest.raises(AuthError):
        tokens.resolve(db, admin_secret)
