"""The password policy, and a new password ending every session of the account."""

from __future__ import annotations

import pytest

from backend import accounts
from backend.db import Database
from backend.db.studio_models import StudioSession
from backend.errors import AuthError, InvalidParameter, RateLimited
from backend.accounts.sessions import Sessions

from .helpers import CHEAP_HASHER, PASSWORD, make_user


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("mallory", "mallory", "at least 8"),
        ("mallory", "mallory99", "user name"),
        ("Mallory", "MALLORY-is-me", "user name"),
        ("mallory", "aaaaaaaa", "too few characters"),
        ("mallory", "abababababab", "too few characters"),
        ("mallory", "password1", "most common"),
        ("mallory", "iloveyou", "most common"),
        ("mallory", "Qwertyuiop", "most common"),
        ("mallory", "x" * 257, "at most 256"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(db: Database, name: str, password: str, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message) as refused:
        accounts.create_user(db, name, password, hasher=CHEAP_HASHER)
    assert refused.value.param == "password" and refused.value.zh != refused.value.message
    assert accounts.list_users(db) == []


@pytest.mark.parametrize("password", [PASSWORD, "Tr0ub4dor&3x", "my cat likes rain", "密码是一首长诗吧"])
def test_reasonable_passwords_pass(db: Database, password: str) -> None:
    assert accounts.create_user(db, "keeper", password, hasher=CHEAP_HASHER).name == "keeper"


def test_a_new_password_ends_every_session(db: Database) -> None:
    user = make_user(db, "olga")
    sessions = Sessions(db)
    tokens = [sessions.create(user.id) for _ in range(3)]
    other = make_user(db, "pete")
    kept = sessions.create(other.id)
    assert accounts.set_password(db, user.id, "a whole new secret", hasher=CHEAP_HASHER) == 3
    fresh = Sessions(db)  # another replica, or this one after its short cache
    assert [fresh.resolve(t) for t in tokens] == [None, None, None]
    assert fresh.resolve(kept) is not None
    with db.read() as s:
        assert s.query(StudioSession).filter_by(user_id=user.id).count() == 0


def test_changing_ones_own_password_needs_the_current_one(db: Database) -> None:
    user = make_user(db, "quinn")
    with pytest.raises(AuthError, match="current password"):
        accounts.change_password(db, user.id, "not it at all", "brand new secret", hasher=CHEAP_HASHER)
    with pytest.raises(InvalidParameter, match="most common"):
        accounts.change_password(db, user.id, PASSWORD, "password123", hasher=CHEAP_HASHER)
    accounts.change_password(db, user.id, PASSWORD, "brand new secret", hasher=CHEAP_HASHER)
    assert accounts.authenticate(db, "quinn", "brand new secret", hasher=CHEAP_HASHER).id == user.id


def test_guessing_the_current_password_with_a_stolen_session_is_throttled(db: Database) -> None:
    user = make_user(db, "ruth")
    for i in range(accounts.CHANGE_LIMIT.allowed):
        with pytest.raises(AuthError):
            accounts.change_password(db, user.id, f"guess number {i}", "brand new secret", hasher=CHEAP_HASHER)
    with pytest.raises(RateLimited):
        accounts.change_password(db, user.id, PASSWORD, "brand new secret", hasher=CHEAP_HASHER)
