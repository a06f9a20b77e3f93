"""Sign-in, sign-up and sessions.

A session is a random token in an HttpOnly cookie; the database keeps its SHA-256 with
the user and an expiry (:class:`~backend.db.studio_models.StudioSession`). Nothing lives
only in this process, so sessions survive a restart and work on every replica. Lookups
are cached for a few seconds because Gradio asks for the user on every request; a
sign-out or a disabled account therefore takes effect everywhere within
``CACHE_SECONDS``.

Wrong passwords are throttled per account name in the database: after
``FREE_FAILURES`` in a row, each further attempt must wait twice as long as the last
(capped), and it is refused unchecked until then, so guessing is slow whichever replica
the guesses reach.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import delete, select

from backend import accounts, codes, ledger
from backend.config import Settings
from backend.db import Database
from backend.db.models import RedeemCode, User, utcnow
from backend.db.studio_models import LoginThrottle, StudioSession
from backend.errors import AuthError, InvalidParameter, PermissionDenied, RateLimited, RedeemError
from backend.passwords import DEFAULT_HASHER

from . import app_settings

SESSION_COOKIE = "studio_session"
SESSION_DAYS = 30
CACHE_SECONDS = 5.0
FREE_FAILURES = 3
MAX_DELAY_SECONDS = 300
#: Failures older than this are forgotten.
THROTTLE_WINDOW = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class SessionUser:
    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Creates, resolves and revokes session tokens."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[SessionUser | None, float]] = {}
        self._lock = threading.Lock()

    def create(self, user_id: int) -> str:
        token = secrets.token_urlsafe(32)
        with self.db.write() as s:
            s.add(
                StudioSession(
                    token_hash=_digest(token), user_id=user_id, expires_at=utcnow() + dt.timedelta(days=SESSION_DAYS)
                )
            )
        return token

    def resolve(self, token: str | None) -> SessionUser | None:
        """The signed-in, enabled user of ``token``, or None."""
        if not token or len(token) > 100:
            return None
        key = _digest(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[1] > now:
                return hit[0]
        with self.db.read() as s:
            row = s.execute(
                select(User.id, User.name, User.role, User.disabled, StudioSession.expires_at)
                .join(StudioSession, StudioSession.user_id == User.id)
                .where(StudioSession.token_hash == key)
            ).first()
        user = None
        if row is not None and not row.disabled and row.expires_at > utcnow():
            user = SessionUser(id=row.id, name=row.name, role=row.role)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (user, now + CACHE_SECONDS)
        return user

    def revoke(self, token: str | None) -> None:
        if not token:
            return
        key = _digest(token)
        with self.db.write() as s:
            s.execute(delete(StudioSession).where(StudioSession.token_hash == key))
        with self._lock:
            self._cache.pop(key, None)

    def revoke_user(self, user_id: int) -> None:
        """End every session of a user (the account was disabled)."""
        with self.db.write() as s:
            s.execute(delete(StudioSession).where(StudioSession.user_id == user_id))
        with self._lock:
            self._cache.clear()

    def purge_expired(self) -> int:
        with self.db.write() as s:
            return s.execute(delete(StudioSession).where(StudioSession.expires_at <= utcnow())).rowcount


def user_by_name(db: Database, name: str) -> SessionUser:
    """The account behind a Gradio ``request.username`` (what the session resolved to)."""
    with db.read() as s:
        user = accounts.find_user(s, name)
    if user.disabled:
        raise PermissionDenied("This account is disabled.", zh="该账户已被停用。")
    return SessionUser(id=user.id, name=user.name, role=user.role)


# ---- sign-in throttle -------------------------------------------------------------------


def _delay_after(failures: int) -> float:
    if failures < FREE_FAILURES:
        return 0.0
    return float(min(2 ** (failures - FREE_FAILURES + 1), MAX_DELAY_SECONDS))


def _check_throttle(db: Database, name_key: str) -> None:
    with db.read() as s:
        row = s.get(LoginThrottle, name_key)
    if row is None:
        return
    since = (utcnow() - row.last_failure_at).total_seconds()
    wait = _delay_after(row.failures) - since
    if wait > 0 and since < THROTTLE_WINDOW.total_seconds():
        seconds = max(1, round(wait))
        raise RateLimited(
            f"Too many wrong passwords. Try again in {seconds} s.",
            zh=f"密码错误次数过多，请 {seconds} 秒后再试。",
            retry_after=wait,
        )


def _record_failure(db: Database, name_key: str) -> None:
    now = utcnow()
    with db.write() as s:
        row = s.get(LoginThrottle, name_key)
        if row is None:
            s.add(LoginThrottle(name_key=name_key, failures=1, last_failure_at=now))
        else:
            fresh = now - row.last_failure_at > THROTTLE_WINDOW
            row.failures = 1 if fresh else row.failures + 1
            row.last_failure_at = now


def _clear_failures(db: Database, name_key: str) -> None:
    with db.write() as s:
        s.execute(delete(LoginThrottle).where(LoginThrottle.name_key == name_key))


def sign_in(db: Database, name: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> User:
    """The user if the password is right; AuthError or RateLimited otherwise."""
    name_key = accounts.normalize_name(name)[:64]
    if not name_key:
        raise AuthError("Enter your user name and password.", zh="请输入用户名和密码。")
    _check_throttle(db, name_key)
    try:
        user = accounts.authenticate(db, name, password, hasher=hasher)
    except AuthError:
        _record_failure(db, name_key)
        raise
    _clear_failures(db, name_key)
    return user


# ---- sign-up ----------------------------------------------------------------------------


def sign_up(
    db: Database,
    settings: Settings,
    name: str,
    password: str,
    *,
    invite_code: str = "",
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> User:
    """Create a creator account as the admin's sign-up mode allows.

    In ``invite`` mode the invite is any unused redeem code: it is redeemed into the new
    account (its credits come on top of the welcome grant), so admins hand out invites
    with the same batches they already manage.
    """
    mode = app_settings.signup_mode(db, settings)
    if mode == "off":
        raise PermissionDenied("Sign-up is closed; ask an administrator for an account.", zh="注册已关闭，请联系管理员开通账户。")
    if mode == "invite":
        _check_invite(db, invite_code)
    user = accounts.create_user(db, name, password, hasher=hasher)
    if mode == "invite":
        try:
            codes.redeem(db, user.id, invite_code)
        except RedeemError:
            # Someone used the same code a moment ago; the account must not exist without it.
            with db.write() as s:
                s.execute(delete(User).where(User.id == user.id))
            raise
    welcome = app_settings.welcome_credits(db, settings)
    if welcome:
        with db.write() as s:
            ledger.credit(s, user.id, welcome, kind="grant", note="welcome")
    return user


def _check_invite(db: Database, code: str) -> None:
    if not code.strip():
        raise InvalidParameter("Sign-up needs an invite code.", zh="注册需要邀请码。", param="invite")
    now = utcnow()
    with db.read() as s:
        row = s.scalar(select(RedeemCode).where(RedeemCode.code_hash == codes.code_hash(code)))
    if row is None or row.redeemed_by is not None or (row.expires_at is not None and row.expires_at <= now):
        raise RedeemError("This invite code is not valid.", zh="邀请码无效。")
