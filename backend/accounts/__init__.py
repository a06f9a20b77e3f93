"""The accounts room: users and passwords, sessions, the credits ledger, redeem codes,
rate limits and the settings an administrator changes.

The package itself is the user API (:mod:`.users`): ``accounts.create_user``,
``accounts.authenticate`` and the rest; the other modules are imported by name.
"""

from .users import (
    CHANGE_LIMIT,
    NAME_PATTERN,
    UserRecord,
    authenticate,
    change_password,
    check_name,
    create_user,
    find_user,
    get_user,
    list_users,
    normalize_name,
    set_disabled,
    set_password,
    set_role,
    grant,
    user_named,
)

__all__ = [
    "CHANGE_LIMIT", "NAME_PATTERN", "UserRecord", "authenticate", "change_password", "check_name", "create_user",
    "find_user", "get_user", "list_users", "normalize_name", "set_disabled", "set_password", "set_role", "grant", "user_named",
]
