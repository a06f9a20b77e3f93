"""Personal access tokens for the API (docs/api.md).

A token is ``sk_`` + 40 random characters, shown once when it is made. The database
keeps its SHA-256 (a copy of the database cannot be replayed as tokens), a short prefix
to tell tokens apart, a name, an optional expiry and a scope:

- ``read``: look only (workflows, quotes, jobs, outputs, balance);
- ``jobs``: also upload inputs, submit and cancel jobs;
- ``admin``: the administrator operations (grants, users, codes, limits, nodes) and
  nothing else; only an administrator may make one, and it stops working if its owner
  stops being one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update

from backend.db import Database, rows_changed
from backend.db.api_models import TOKEN_SCOPES, ApiToken

__all__ = ["TOKEN_SCOPES", "TokenInfo", "TokenUser", "create", "digest", "list_for_user", "resolve", "revoke"]
from backend.db.models import User, utcnow
from backend.errors import AuthError, InvalidParameter, NotFound, PermissionDenied

PREFIX = "sk_"
SHOWN_PREFIX = 10
MAX_NAME = 64
#: Tokens one user may hold at once (revoked ones do not count).
MAX_TOKENS = 50


@dataclass(frozen=True)
class TokenInfo:
    """A token as its owner sees it (never the secret)."""

    id: int
    name: str
    prefix: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class TokenUser:
    """Who a request's token speaks for, and what it may do."""

    user_id: int
    name: str
    role: str
    scope: str
    token_id: int

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(db: Database, user_id: int, name: str, *, scope: str = "jobs",
           expires_at: dt.datetime | None = None) -> tuple[str, TokenInfo]:
    """Make a token; ``(secret, info)``. The secret is never stored or shown again."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise InvalidParameter(f"A token needs a name of 1–{MAX_NAME} characters.",
                               zh=f"令牌名称需为 1–{MAX_NAME} 个字符。", param="name")
    if scope not in TOKEN_SCOPES:
        raise InvalidParameter(f"A token's scope is one of {', '.join(TOKEN_SCOPES)}, not {scope!r}.",
                               zh=f"令牌权限须为 {'、'.join(TOKEN_SCOPES)} 之一。", param="scope")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidParameter("A token's expiry must be in the future.", zh="令牌的过期时间必须在将来。",
                               param="expires_at")
    secret = PREFIX + secrets.token_urlsafe(30)
    with db.write() as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound(f"No user with id {user_id}.", zh=f"没有编号为 {user_id} 的用户。")
        if scope == "admin" and user.role != "admin":
            raise PermissionDenied("Only administrators may make admin tokens.", zh="只有管理员可以创建管理令牌。")
        held = s.scalars(select(ApiToken.id).where(ApiToken.user_id == user_id, ApiToken.revoked.is_(False))).all()
        if len(held) >= MAX_TOKENS:
            raise InvalidParameter(f"You hold {MAX_TOKENS} tokens already; revoke one first.",
                                   zh=f"您已有 {MAX_TOKENS} 个令牌，请先撤销一个。", param="name")
        row = ApiToken(token_hash=digest(secret), prefix=secret[:SHOWN_PREFIX], user_id=user_id, name=name,
                       scope=scope, expires_at=expires_at, revoked=False)
        s.add(row)
        s.flush()
        return secret, _info(row)


def list_for_user(db: Database, user_id: int) -> list[TokenInfo]:
    """The user's tokens that still work (not revoked, expired ones included), newest first."""
    with db.read() as s:
        rows = s.scalars(select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked.is_(False))
                         .order_by(ApiToken.id.desc()))
        return [_info(r) for r in rows]


def revoke(db: Database, user_id: int, token_id: int) -> None:
    """Revoke one of the user's tokens; NotFound for a token that is not theirs."""
    with db.write() as s:
        moved = rows_changed(s.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id,
                                                              ApiToken.revoked.is_(False)).values(revoked=True)))
    if not moved:
        raise NotFound(f"No token {token_id}.", zh=f"没有令牌 {token_id}。")


def resolve(db: Database, secret: str | None) -> TokenUser:
    """The user a bearer token speaks for; AuthError if it is unknown, revoked, expired or
    its account is disabled."""
    if not secret or not secret.startswith(PREFIX) or len(secret) > 100:
        raise AuthError("Send a personal access token: Authorization: Bearer sk_…",
                        zh="请发送个人访问令牌：Authorization: Bearer sk_…")
    now = utcnow()
    with db.read() as s:
        row = s.execute(select(ApiToken, User.name, User.role, User.disabled)
                        .join(User, User.id == ApiToken.user_id)
                        .where(ApiToken.token_hash == digest(secret))).first()
    if row is None or row[0].revoked:
        raise AuthError("This token is unknown or was revoked.", zh="该令牌不存在或已被撤销。")
    token, name, role, disabled = row
    if token.expires_at is not None and token.expires_at <= now:
        raise AuthError("This token has expired; make a new one on the Account page.", zh="该令牌已过期，请在账户页面新建。")
    if disabled:
        raise AuthError("This account is disabled.", zh="该账户已被停用。")
    if token.scope == "admin" and role != "admin":
        raise AuthError("This admin token's owner is no longer an administrator.", zh="该管理令牌的所有者已不是管理员。")
    if token.last_used_at is None or now - token.last_used_at > dt.timedelta(minutes=1):
        with db.write() as s:  # at most once a minute: a busy script must not write on every call
            s.execute(update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now))
    return TokenUser(user_id=token.user_id, name=name, role=role, scope=token.scope, token_id=token.id)


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(id=row.id, name=row.name, prefix=row.prefix, scope=row.scope, created_at=row.created_at,
                     expires_at=row.expires_at, last_used_at=row.last_used_at)
