"""The studio's session cookie. Sessions themselves (tokens, lookups, revoking) are the
backend's (:mod:`backend.accounts.sessions`), as are sign-in and sign-up
(:mod:`backend.accounts.signin`); the cookie holds the session token, HttpOnly."""

from __future__ import annotations

SESSION_COOKIE = "studio_session"
