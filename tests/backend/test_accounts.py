"""Accounts: creation, sign-in, rehash, disabling — on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from backend import accounts
from backend.accounts import ledger
from backend.db import Database
from backend.errors import AuthError, InvalidParameter

from .helpers import CHEAP_HASHER, PASSWORD, make_user


def test_create_and_sign_in_case_insensitively(db: Database) -> None:
    user = make_user(db, "Alice", credits=50)
    with db.read() as s:
        assert accounts.find_user(s, "alice").password_hash.startswith("$argon2id$")
    signed_in = accounts.authenticate(db, "alice", PASSWORD, hasher=CHEAP_HASHER)
    assert signed_in.id == user.id and signed_in.name == "Alice"
    with db.read() as s:
        assert ledger.balance(s, user.id) == 50
        assert accounts.find_user(s, "ALICE").last_login_at is not None


def test_names_are_unique_ignoring_case(db: Database) -> None:
    make_user(db, "bob")
    with pytest.raises(InvalidParameter, match="taken"):
        make_user(db, "BOB")


@pytest.mark.parametrize("name", ["", "a", "-dash", "has space", "x" * 33, "semi;colon", "名字"])
def test_bad_names_are_refused(db: Database, name: str) -> None:
    with pytest.raises(InvalidParameter):
        make_user(db, name)


def test_short_password_is_refused(db: Database) -> None:
    with pytest.raises(InvalidParameter, match="at least 8"):
        accounts.create_user(db, "carol", "short", hasher=CHEAP_HASHER)


def test_wrong_password_and_unknown_name_give_the_same_error(db: Database) -> None:
    make_user(db, "dave")
    with pytest.raises(AuthError) as wrong:
        accounts.authenticate(db, "dave", "wrong password", hasher=CHEAP_HASHER)
    with pytest.raises(AuthError) as unknown:
        accounts.authenticate(db, "nobody", "wrong password", hasher=CHEAP_HASHER)
    assert str(wrong.value) == str(unknown.value)


def test_disabled_account_cannot_sign_in_until_enabled(db: Database) -> None:
    make_user(db, "erin")
    accounts.set_disabled(db, "erin", True)
    with pytest.raises(AuthError, match="disabled"):
        accounts.authenticate(db, "erin", PASSWORD, hasher=CHEAP_HASHER)
    accounts.set_disabled(db, "erin", False)
    assert accounts.authenticate(db, "erin", PASSWORD, hasher=CHEAP_HASHER).name == "erin"


def test_outdated_hash_is_rehashed_on_sign_in(db: Database) -> None:
    make_user(db, "frank")  # hashed with the cheap parameters
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    accounts.authenticate(db, "frank", PASSWORD, hasher=stronger)
    with db.read() as s:
        stored = accounts.find_user(s, "frank").password_hash
    assert "m=16,t=2" in stored
    assert not stronger.check_needs_rehash(stored)
    assert accounts.authenticate(db, "frank", PASSWORD, hasher=stronger).name == "frank"
