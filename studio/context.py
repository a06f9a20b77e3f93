"""What every page needs: the backend, the event feed, sessions, and who is asking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
from argon2 import PasswordHasher

from backend.errors import PermissionDenied, StudioError
from backend.accounts.sessions import SessionUser, Sessions, user_by_name
from backend.runtime import Backend

from .errors import UserError
from .feed import Feed
from .i18n import lang_of
from .uploads import Uploads


@dataclass
class Studio:
    backend: Backend
    feed: Feed
    sessions: Sessions
    #: Wakes the dispatcher after a job was queued or a slot freed.
    wake: Callable[[], None]
    hasher: PasswordHasher
    #: The browser-side translation table (labels, buttons, workflow texts).
    i18n: gr.I18n
    #: The per-session upload folders: the only files a handler may open.
    uploads: Uploads

    def user(self, request: gr.Request) -> SessionUser:
        """The signed-in user of a Gradio request (the session resolved it to a name)."""
        name = getattr(request, "username", None)
        if not name:
            raise UserError("Please sign in again. / 请重新登录。")
        try:
            return user_by_name(self.backend.db, name)
        except StudioError as exc:
            raise UserError(exc.text(lang_of(request))) from None

    def admin(self, request: gr.Request) -> SessionUser:
        """The user if an administrator; every admin handler calls this on the server,
        because hiding the admin page in the browser protects nothing."""
        user = self.user(request)
        if not user.is_admin:
            exc = PermissionDenied("Administrators only.", zh="仅限管理员。")
            raise UserError(exc.text(lang_of(request)))
        return user


def fail(exc: StudioError, request: gr.Request | None) -> UserError:
    """A backend error as a Gradio error toast in the user's language. A user's mistake
    is not the operator's problem: no traceback in the server log."""
    return UserError(exc.text(lang_of(request) if request is not None else "en"))
