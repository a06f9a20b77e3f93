"""Who calls the API: a personal access token in ``Authorization: Bearer``, nothing else.

Cookies never authenticate the API, so a page on another site that makes the browser
send a request with the studio's cookie gets nowhere (no CSRF), and no CORS headers are
sent, so another site's script cannot read an answer or add an ``Authorization`` header.

Scopes (:mod:`backend.accounts.tokens`): ``read`` tokens may only read, ``jobs`` tokens may also
upload, submit and cancel, and only ``admin`` tokens reach ``/v1/admin`` — which no other
token reaches.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend.accounts import tokens
from backend.accounts.tokens import TokenUser

from .errors import ApiError

bearer = HTTPBearer(auto_error=False, description="A personal access token (Account page or "
                                                  "`python -m backend tokens create USER`).")


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> TokenUser:
    secret = credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None
    user = await run_in_threadpool(tokens.resolve, request.app.state.studio.backend.db, secret)
    request.state.caller = user
    return user


def reader(user: TokenUser = Depends(caller)) -> TokenUser:
    if user.scope == "admin":
        raise ApiError(403, "forbidden", "Admin tokens reach only /v1/admin; use a personal token.",
                       "管理令牌只能访问 /v1/admin，请使用个人令牌。")
    return user


def writer(user: TokenUser = Depends(reader)) -> TokenUser:
    if user.scope != "jobs":
        raise ApiError(403, "forbidden", "This token may only read; make one with the 'jobs' scope to do this.",
                       "该令牌只读；请创建 'jobs' 权限的令牌。")
    return user


def admin(user: TokenUser = Depends(caller)) -> TokenUser:
    if user.scope != "admin" or not user.is_admin:
        raise ApiError(403, "forbidden", "Administrator tokens only.", "仅限管理令牌。")
    return user
