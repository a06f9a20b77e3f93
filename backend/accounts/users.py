"""User accounts: creation, sign-in, roles, disabling, passwords.

Names are unique case-insensitively (``name_key``). A wrong password and an unknown name
give the same error so that sign-in does not reveal which names exist. Setting a new
password (CLI, admin or the user) ends every session of the account, so whoever knew
the old one is signed out everywhere.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from argon2 import PasswordHasher
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.accounts import ledger, throttle
from backend.db import Database, rows_changed
from backend.db.models import ROLES, User, utcnow
from backend.db.studio_models import StudioSession
from backend.errors import AuthError, InvalidParameter, NotFound
from backend.accounts.passwords import DEFAULT_HASHER, check_password_policy, hash_password, verify_password

@dataclass(frozen=True)
class UserRecord:
    """An account as the front ends see it (never its password hash)."""

    id: int
    name: str
    role: str
    disabled: bool
    balance: int
    created_at: dt.datetime
    last_login_at: dt.datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, user: User) -> UserRecord:
        return cls(id=user.id, name=user.name, role=user.role, disabled=user.disabled, balance=user.balance,
                   created_at=user.created_at, last_login_at=user.last_login_at)


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{1,31}$")

# Verifying against a real hash for unknown names keeps the timing of a failed sign-in
# the same whether or not the name exists.
_DUMMY_HASH = DEFAULT_HASHER.hash("not-a-real-password")


def normalize_name(name: str) -> str:
    return name.strip().lower()


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME_PATTERN.match(name):
        raise InvalidParameter(
            "A user name has 2–32 characters: letters, digits, '_', '.' or '-', starting with a letter or digit.",
            zh="用户名为 2–32 个字符：字母、数字、'_'、'.' 或 '-'，以字母或数字开头。",
            param="name",
        )
    return name


def create_user(
    db: Database,
    name: str,
    password: str,
    *,
    role: str = "creator",
    welcome_credits: int = 0,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> UserRecord:
    """Create an account, granting ``welcome_credits`` through the ledger."""
    name = check_name(name)
    check_password_policy(password, name=name)
    if role not in ROLES:
        raise InvalidParameter(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.", param="role")
    password_hash = hash_password(password, hasher)
    try:
        with db.write() as s:
            user = User(name=name, name_key=normalize_name(name), password_hash=password_hash, role=role, balance=0)
            s.add(user)
            s.flush()
            if welcome_credits:
                ledger.credit(s, user.id, welcome_credits, kind="grant", note="welcome")
            s.refresh(user)
            record = UserRecord.of(user)
    except IntegrityError:
        raise InvalidParameter(
            f"The name {name!r} is taken; choose another.", zh=f"用户名 {name!r} 已被使用，请换一个。", param="name"
        ) from None
    return record


def find_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name_key == normalize_name(name)))
    if user is None:
        raise NotFound(f"No user named {name!r}.", zh=f"没有名为 {name!r} 的用户。")
    return user


def get_user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
    return user


def authenticate(db: Database, name: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> UserRecord:
    """The user if ``password`` is right and the account enabled; rehashes outdated hashes."""
    failure = AuthError("Wrong user name or password.", zh="用户名或密码错误。")
    with db.read() as s:
        user = s.scalar(select(User).where(User.name_key == normalize_name(name)))
    if user is None:
        verify_password(_DUMMY_HASH, password, hasher)
        raise failure
    if not verify_password(user.password_hash, password, hasher):
        raise failure
    if user.disabled:
        raise AuthError("This account is disabled; ask an administrator.", zh="该账户已被停用，请联系管理员。")
    now = utcnow()
    values: dict[str, object] = {"last_login_at": now}
    if hasher.check_needs_rehash(user.password_hash):
        values["password_hash"] = hash_password(password, hasher)
    with db.write() as s:
        s.execute(update(User).where(User.id == user.id).values(**values))
    return replace(UserRecord.of(user), last_login_at=now)


#: Wrong current passwords when changing one: a stolen session must not become a way to
#: guess the password it lacks.
CHANGE_LIMIT = throttle.Limit(5, dt.timedelta(minutes=15), backoff=True, what=("wrong passwords", "密码错误"))


def set_password(db: Database, user_id: int, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> int:
    """Give the account a new password and end all its sessions; how many were ended."""
    with db.read() as s:
        name = get_user(s, user_id).name
    check_password_policy(password, name=name)
    password_hash = hash_password(password, hasher)
    with db.write() as s:
        get_user(s, user_id).password_hash = password_hash
        return rows_changed(s.execute(delete(StudioSession).where(StudioSession.user_id == user_id)))


def change_password(db: Database, user_id: int, current: str, new: str, *,
                    hasher: PasswordHasher = DEFAULT_HASHER) -> int:
    """The user's own change: ``current`` must be right. Ends every session (see
    :func:`set_password`); raises AuthError, RateLimited or InvalidParameter."""
    with db.read() as s:
        user = get_user(s, user_id)
    if current == new:
        raise InvalidParameter("The new password is the same as the current one.", zh="新密码与当前密码相同。",
                               param="password")
    check_password_policy(new, name=user.name)
    key = f"password:user:{user_id}"
    throttle.claim(db, key, CHANGE_LIMIT)
    if not verify_password(user.password_hash, current, hasher):
        raise AuthError("The current password is wrong.", zh="当前密码不正确。")
    throttle.reset(db, key)
    return set_password(db, user_id, new, hasher=hasher)


def set_disabled(db: Database, name: str, disabled: bool) -> UserRecord:
    with db.write() as s:
        user = find_user(s, name)
        user.disabled = disabled
        return UserRecord.of(user)


def set_role(db: Database, name: str, role: str) -> UserRecord:
    if role not in ROLES:
        raise InvalidParameter(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.", param="role")
    with db.write() as s:
        user = find_user(s, name)
        user.role = role
        return UserRecord.of(user)


def user_named(db: Database, name: str) -> UserRecord:
    """The account called ``name`` (any case); NotFound if there is none."""
    with db.read() as s:
        return UserRecord.of(find_user(s, name))


def list_users(db: Database) -> list[UserRecord]:
    with db.read() as s:
        return [UserRecord.of(user) for user in s.scalars(select(User).order_by(User.id))]


def grant(db: Database, name: str, amount: int, *, kind: str = "grant", note: str | None = None,
          actor: str | None = None) -> UserRecord:
    """Give the user called ``name`` ``amount`` credits (an administrator's grant; ``kind``
    may also be any of :data:`~backend.accounts.ledger.USER_KINDS`); the user after it."""
    with db.write() as s:
        user = find_user(s, name)
        ledger.credit(s, user.id, amount, kind=kind, note=note, actor=actor)
        s.refresh(user)
        return UserRecord.of(user)
