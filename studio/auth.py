"""Sign-in, sign-up and sessions.

A session is a random token in an HttpOnly cookie; the database keeps its SHA-256 with
the user and an expiry (:class:`~backend.db.studio_models.StudioSession`). Nothing lives
only in this process, so sessions survive a restart and work on every replica. Lookups
are cached for a few seconds because Gradio asks for the user on every request; a
sign-out or a disabled account therefore takes effect everywhere within
``CACHE_SECONDS``.

Sign-in attempts are claimed from three limits before the password is checked (atomic
and shared by all replicas, see :mod:`backend.throttle`):

- per name *and* address (:func:`name_address_limit`): a few wrong passwords, then each further
  attempt waits twice as long as the last, refused unchecked until then;
- per address (``Settings.login_failures_per_address`` per window): spraying many names
  from one place is refused, not just the names it hits;
- per name over all addresses (``NAME_CEILING``): past the ceiling attempts for the name
  are *slowed* (``SLOW_SECONDS`` each), never refused, so guessers elsewhere cannot lock
  the owner out of the account.

A successful sign-in gives its claims back. Sign-ups are limited per address too
(``Settings.signups_per_address`` per hour), and an invite code is a guess like a redeem
code (:func:`backend.codes.check_invite`).
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

from backend import accounts, codes, ledger, throttle
from backend.config import Settings
from backend.db import Database
from backend.db.models import User, utcnow
from backend.db.studio_models import StudioSession
from backend.errors import AuthError, PermissionDenied, RateLimited, RedeemError, StudioError
from backend.passwords import DEFAULT_HASHER

from . import app_settings

SESSION_COOKIE = "studio_session"
SESSION_DAYS = 30
CACHE_SECONDS = 5.0
#: Failures older than this are forgotten.
THROTTLE_WINDOW = dt.timedelta(minutes=15)
_WRONG = ("wrong passwords", "密码错误")
#: Wrong passwords a name may try from one address before the backoff starts.
FREE_FAILURES = 5
NAME_CEILING = throttle.Limit(20, THROTTLE_WINDOW, refuse=False, what=_WRONG)
#: The pause of each attempt for a name past ``NAME_CEILING`` (on top of the usual one).
SLOW_SECONDS = 3.0
SIGNUP_WINDOW = dt.timedelta(hours=1)


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


# ---- sign-in ----------------------------------------------------------------------------


def _keys(name_key: str, address: str | None) -> tuple[str, str, str]:
    where = throttle.address_key(address)
    return f"login:name-addr:{name_key}|{where}", f"login:name:{name_key}", f"login:addr:{where}"


def name_address_limit(settings: Settings) -> throttle.Limit:
    return throttle.Limit(FREE_FAILURES, THROTTLE_WINDOW, backoff=True, what=_WRONG,
                          first_delay=dt.timedelta(seconds=settings.login_backoff_seconds))


def address_limit(settings: Settings) -> throttle.Limit:
    return throttle.Limit(settings.login_failures_per_address, THROTTLE_WINDOW,
                          what=("failed sign-ins from your network", "来自您网络的登录失败"))


def sign_in_delay(db: Database, name: str) -> float:
    """Seconds to wait before checking a password for ``name`` (its ceiling was passed)."""
    name_key = accounts.normalize_name(name)[:64]
    over = throttle.count(db, f"login:name:{name_key}", NAME_CEILING) >= NAME_CEILING.allowed
    return SLOW_SECONDS if name_key and over else 0.0


def sign_in(db: Database, settings: Settings, name: str, password: str, *, address: str | None,
            hasher: PasswordHasher = DEFAULT_HASHER) -> User:
    """The user if the password is right; AuthError or RateLimited otherwise.

    ``address`` is the client's address (see :func:`backend.throttle.address_key`).
    """
    name_key = accounts.normalize_name(name)[:64]
    if not name_key:
        raise AuthError("Enter your user name and password.", zh="请输入用户名和密码。")
    pair, per_name, per_address = _keys(name_key, address)
    throttle.claim(db, per_address, address_limit(settings))
    try:
        throttle.claim(db, pair, name_address_limit(settings))
    except RateLimited:
        throttle.release(db, per_address)
        raise
    throttle.claim(db, per_name, NAME_CEILING)
    user = accounts.authenticate(db, name, password, hasher=hasher)  # AuthError: the claims stay
    throttle.reset(db, pair)
    throttle.release(db, per_name)
    throttle.release(db, per_address)
    return user


# ---- sign-up ----------------------------------------------------------------------------


def sign_up(
    db: Database,
    settings: Settings,
    name: str,
    password: str,
    *,
    address: str | None,
    invite_code: str = "",
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> User:
    """Create a creator account as the admin's sign-up mode allows.

    In ``invite`` mode the invite is any unused redeem code: it is redeemed into the new
    account (its credits come on top of the welcome grant), so admins hand out invites
    with the same batches they already manage. Each address may create
    ``settings.signups_per_address`` accounts per hour.
    """
    mode = app_settings.signup_mode(db, settings)
    if mode == "off":
        raise PermissionDenied("Sign-up is closed; ask an administrator for an account.", zh="注册已关闭，请联系管理员开通账户。")
    limits = {"max_failures": settings.redeem_max_failures, "window_seconds": settings.redeem_window_seconds}
    if mode == "invite":
        codes.check_invite(db, invite_code, address=address, **limits)
    key = f"signup:addr:{throttle.address_key(address)}"
    throttle.claim(db, key, throttle.Limit(settings.signups_per_address, SIGNUP_WINDOW,
                                           what=("new accounts from your network", "来自您网络的新账户")))
    try:
        user = accounts.create_user(db, name, password, hasher=hasher)
    except StudioError:
        throttle.release(db, key)  # a name taken or a weak password is no account made
        raise
    if mode == "invite":
        try:
            codes.redeem(db, user.id, invite_code, address=address, **limits)
        except (RedeemError, RateLimited):
            # Someone used the same code a moment ago; the account must not exist without it.
            with db.write() as s:
                s.execute(delete(User).where(User.id == user.id))
            raise
    welcome = app_settings.welcome_credits(db, settings)
    if welcome:
        with db.write() as s:
            ledger.credit(s, user.id, welcome, kind="grant", note="welcome")
    return user
