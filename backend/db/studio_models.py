"""Tables owned by the studio (the web app), beside the backend's own in :mod:`.models`.

Sessions live in the database rather than in Gradio's in-memory token table, so a
sign-in survives a studio restart and works on every replica behind a load balancer.
Only a SHA-256 of each session token is stored: a copy of the database cannot be
replayed as cookies.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime, utcnow


class StudioSession(Base):
    """One signed-in browser. The cookie holds the token; the row holds its hash."""

    __tablename__ = "studio_sessions"
    __table_args__ = (Index("ix_studio_sessions_user", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AppSetting(Base):
    """A setting an administrator changes in the studio (sign-up mode, welcome grant);
    it overrides the start-up :class:`~backend.config.Settings` value of the same name."""

    __tablename__ = "studio_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserPreference(Base):
    """What a user chose for the studio itself (the language), kept with the account so it
    follows them to every browser and device."""

    __tablename__ = "studio_user_prefs"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    lang: Mapped[str] = mapped_column(String(8))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
