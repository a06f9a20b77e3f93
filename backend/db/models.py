"""SQLAlchemy models: the database is the truth for accounts, money, jobs and assets.

Money is integer credits. ``users.balance`` is a cached sum of the user's ledger rows,
changed only in the same transaction that appends the row, and checked by
``backend.accounts.ledger.verify``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from backend.jobs.state import JobState


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would drop the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.timezone.utc) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


ROLES = ("creator", "admin")
LEDGER_KINDS = ("grant", "recharge", "redeem", "charge", "refund", "adjust")
JOB_STATES = tuple(state.value for state in JobState)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="ck_users_balance_nonnegative"),
        CheckConstraint(f"role IN {ROLES}", name="ck_users_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    #: Lower-cased name; makes sign-in and uniqueness case-insensitive.
    name_key: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="creator")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: When the dispatcher last gave one of this user's jobs a node; the backlog serves
    #: the user served least recently first, so nobody's burst starves anyone else.
    last_served_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_user_idempotency"),
        CheckConstraint(f"state IN {JOB_STATES}", name="ck_jobs_state"),
        CheckConstraint("cost >= 0", name="ck_jobs_cost_nonnegative"),
        Index("ix_jobs_state_created", "state", "created_at"),
        #: The backlog's order: each waiting user's queued jobs, oldest first (backlog.py).
        Index("ix_jobs_backlog", "state", "user_id", "created_at", "id"),
        Index("ix_jobs_user_created", "user_id", "created_at"),
        Index("ix_jobs_node_state", "node_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    workflow: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Input parameter name -> asset id (sha256) of the stored upload.
    inputs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(64))
    #: SHA-256 of what was asked (workflow, parameters as sent, webhook), so that a key
    #: reused for another request is refused; None on jobs older than revision 0009.
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    cost: Mapped[int] = mapped_column(BigInteger)
    #: Predicted peak memory in MiB, from the workflow's memory formula.
    memory_mb: Mapped[float] = mapped_column(Float, default=0.0)
    #: Predicted run time in seconds on a reference node.
    estimate_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prompt_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The stage alias (or node id) where the job failed, for the creator's message.
    error_stage: Mapped[str | None] = mapped_column(String(128), nullable=True)


class LedgerEntry(Base):
    """One append-only movement of credits. Never updated, never deleted."""

    __tablename__ = "ledger"
    __table_args__ = (
        # A job is charged at most once and refunded at most once, whatever retries.
        UniqueConstraint("job_id", "kind", name="uq_ledger_job_kind"),
        CheckConstraint(f"kind IN {LEDGER_KINDS}", name="ck_ledger_kind"),
        Index("ix_ledger_user_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), nullable=True)
    code_id: Mapped[int | None] = mapped_column(ForeignKey("redeem_codes.id"), nullable=True, unique=True)
    #: Who made the movement when it was not the system (an admin's name).
    actor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    note: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Asset(Base):
    """Stored bytes, named by their SHA-256; the same bytes are stored once."""

    __tablename__ = "assets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # image, audio, video, other
    format: Mapped[str] = mapped_column(String(16))  # PNG, JPEG, WEBP, FLAC, ...
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetOwner(Base):
    """Who may see an asset: uploaders and the owners of jobs that produced it."""

    __tablename__ = "asset_owners"

    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    #: The file name the user gave, for display only; never used as a path.
    name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobOutput(Base):
    __tablename__ = "job_outputs"
    __table_args__ = (UniqueConstraint("job_id", "graph_node_id", "position", name="uq_job_outputs_slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    asset_id: Mapped[str] = mapped_column(ForeignKey("assets.id"))
    #: The graph node that produced it and its index within that node's outputs.
    graph_node_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RedeemCode(Base):
    """A single-use code worth ``credits``. Only its hash is stored."""

    __tablename__ = "redeem_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The last characters, so an admin can tell codes apart without the secret.
    hint: Mapped[str] = mapped_column(String(8))
    batch: Mapped[str] = mapped_column(String(32), index=True)
    credits: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    redeemed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Throttle(Base):
    """Recent attempts of one kind by one party (a name and address signing in, a user
    redeeming codes, ...): see :mod:`backend.accounts.throttle`."""

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    #: No attempt before this moment (the backoff after repeated failures).
    next_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class StageAlias(Base):
    """An admin's override of a workflow spec's stage alias for one graph node."""

    __tablename__ = "stage_aliases"

    workflow: Mapped[str] = mapped_column(String(64), primary_key=True)
    graph_node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    en: Mapped[str] = mapped_column(String(128))
    zh: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
