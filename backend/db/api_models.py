"""Tables of the integrators' API: personal access tokens, per-user limit overrides and
job webhooks with their delivery attempts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, UTCDateTime, utcnow

TOKEN_SCOPES = ("read", "jobs", "admin")


class ApiToken(Base):
    """A personal access token. Only the SHA-256 of the secret is kept; ``prefix`` (the
    first characters) lets its owner tell tokens apart."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class UserLimit(Base):
    """An administrator's override of one per-user limit (``backend.jobs.limits``)."""

    __tablename__ = "user_limits"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobWebhook(Base):
    """Where to tell the end of a job, and how far the telling got."""

    __tablename__ = "job_webhooks"
    __table_args__ = (Index("ix_job_webhooks_state_next", "state", "next_at"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    #: pending (waiting for the job's end or the next attempt), delivered, gave_up
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookAttempt(Base):
    """One POST of a job's webhook: its answer or why it failed."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(255), nullable=True)
