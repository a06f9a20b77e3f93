"""Signed-in sessions: a random token for the client (a cookie, a bearer token) and, in
the database, its SHA-256 with the user and an expiry
(:class:`~backend.db.studio_models.StudioSession`). Nothing lives only in one process, so
sessions survive a restart and work on every replica. Lookups are cached for a few
seconds because a web front end asks for the user on every request; a sign-out or a
disabled account therefore takes effect everywhere within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from backend.accounts.users import find_user
from backend.db import Database, rows_changed
from backend.db.models import User, utcnow
from backend.db.studio_models import StudioSession
from backend.errors import PermissionDenied

SESSION_DAYS = 30
CACHE_SECONDS = 5.0


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
            return rows_changed(s.execute(delete(StudioSession).where(StudioSession.expires_at <= utcnow())))


def user_by_name(db: Database, name: str) -> SessionUser:
    """The account behind a Gradio ``request.username`` (what the session resolved to)."""
    with db.read() as s:
        user = find_user(s, name)
    if user.disabled:
        raise PermissionDenied("This account is disabled.", zh="该账户已被停用。")
    return SessionUser(id=user.id, name=user.name, role=user.role)


