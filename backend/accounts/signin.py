"""Sign-in and sign-up, with their rate limits (sessions are :mod:`.sessions`).

Sign-in attempts are claimed from three limits before the password is checked (atomic
and shared by all replicas, see :mod:`backend.accounts.throttle`):

- per name *and* address (:func:`name_address_limit`): a few wrong passwords, then each further
  attempt waits twice as long as the last, refused unchecked until then;
- per address (``Settings.login_failures_per_address`` per window): spraying many names
  from one place is refused, not just the names it hits;
- per name over all addresses (``NAME_CEILING``): past the ceiling attempts for the name
  are *slowed* (``SLOW_SECONDS`` each), never refused, so guessers elsewhere cannot lock
  the owner out of the account.

A successful sign-in gives its claims back. Sign-ups are limited per address too
(``Settings.signups_per_address`` per hour), and an invite code is a guess like a redeem
code (:func:`backend.accounts.codes.check_invite`).
"""

from __future__ import annotations

import datetime as dt

from argon2 import PasswordHasher
from sqlalchemy import delete

from backend.accounts import app_settings, codes, ledger, throttle, users
from backend.accounts.passwords import DEFAULT_HASHER
from backend.accounts.users import UserRecord
from backend.config import Settings
from backend.db import Database
from backend.db.models import User
from backend.errors import AuthError, PermissionDenied, RateLimited, RedeemError, StudioError

#: Failures older than this are forgotten.
THROTTLE_WINDOW = dt.timedelta(minutes=15)
_WRONG = ("wrong passwords", "密码错误")
#: Wrong passwords a name may try from one address before the backoff starts.
FREE_FAILURES = 5
NAME_CEILING = throttle.Limit(20, THROTTLE_WINDOW, refuse=False, what=_WRONG)
#: The pause of each attempt for a name past ``NAME_CEILING`` (on top of the usual one).
SLOW_SECONDS = 3.0
SIGNUP_WINDOW = dt.timedelta(hours=1)


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
    name_key = users.normalize_name(name)[:64]
    over = throttle.count(db, f"login:name:{name_key}", NAME_CEILING) >= NAME_CEILING.allowed
    return SLOW_SECONDS if name_key and over else 0.0


def sign_in(db: Database, settings: Settings, name: str, password: str, *, address: str | None,
            hasher: PasswordHasher = DEFAULT_HASHER) -> UserRecord:
    """The user if the password is right; AuthError or RateLimited otherwise.

    ``address`` is the client's address (see :func:`backend.accounts.throttle.address_key`).
    """
    name_key = users.normalize_name(name)[:64]
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
    user = users.authenticate(db, name, password, hasher=hasher)  # AuthError: the claims stay
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
) -> UserRecord:
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
        user = users.create_user(db, name, password, hasher=hasher)
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
