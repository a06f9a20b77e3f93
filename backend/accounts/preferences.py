"""A user's own front-end settings, kept with the account: today the language."""

from __future__ import annotations

from backend.db import Database
from backend.db.models import utcnow
from backend.db.studio_models import UserPreference
from backend.errors import InvalidParameter

LANGS = ("en", "zh")


def lang(db: Database, user_id: int) -> str | None:
    """The language the user chose ("en" or "zh"), or None if they never chose one."""
    with db.read() as s:
        row = s.get(UserPreference, user_id)
        return row.lang if row is not None else None


def set_lang(db: Database, user_id: int, chosen: str) -> str:
    """Keep ``chosen`` (one of ``LANGS``; a front end normalizes what the browser sent)."""
    if chosen not in LANGS:
        raise InvalidParameter(f"The language is one of {', '.join(LANGS)}.", zh="语言无效。", param="lang")
    with db.write() as s:
        row = s.get(UserPreference, user_id)
        if row is None:
            s.add(UserPreference(user_id=user_id, lang=chosen))
        else:
            row.lang, row.updated_at = chosen, utcnow()
    return chosen
