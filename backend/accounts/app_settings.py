"""Settings an administrator changes from the studio, stored in the database so that
every replica sees the same value; the start-up :class:`~backend.config.Settings` gives
the defaults."""

from __future__ import annotations

from backend.config import SIGNUP_MODES, Settings
from backend.db import Database
from backend.db.models import utcnow
from backend.db.studio_models import AppSetting
from backend.errors import InvalidParameter

MAX_WELCOME = 1_000_000


def _get(db: Database, key: str) -> str | None:
    with db.read() as s:
        row = s.get(AppSetting, key)
        return row.value if row is not None else None


def _put(db: Database, key: str, value: str) -> None:
    with db.write() as s:
        row = s.get(AppSetting, key)
        if row is None:
            s.add(AppSetting(key=key, value=value))
        else:
            row.value, row.updated_at = value, utcnow()


def signup_mode(db: Database, settings: Settings) -> str:
    value = _get(db, "signup_mode")
    return value if value in SIGNUP_MODES else settings.signup_mode


def welcome_credits(db: Database, settings: Settings) -> int:
    value = _get(db, "welcome_credits")
    return int(value) if value is not None and value.isdigit() else settings.welcome_credits


def set_signup(db: Database, *, mode: str, welcome: int) -> None:
    if mode not in SIGNUP_MODES:
        raise InvalidParameter(f"Sign-up mode must be one of {', '.join(SIGNUP_MODES)}.", zh="注册方式无效。")
    if not 0 <= welcome <= MAX_WELCOME:
        raise InvalidParameter(f"Welcome credits must be 0–{MAX_WELCOME}.", zh=f"赠送积分必须在 0–{MAX_WELCOME} 之间。")
    _put(db, "signup_mode", mode)
    _put(db, "welcome_credits", str(welcome))
