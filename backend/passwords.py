"""Password hashing with Argon2id.

argon2-cffi's defaults (64 MiB, t=3, p=4) exceed the OWASP minimum. The hasher is passed
in rather than global so that tests can use cheap parameters and exercise rehashing.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .errors import InvalidParameter

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256

DEFAULT_HASHER = PasswordHasher()


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidParameter(
            f"The password must have at least {MIN_PASSWORD_LENGTH} characters.",
            zh=f"密码至少需要 {MIN_PASSWORD_LENGTH} 个字符。",
            param="password",
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidParameter(
            f"The password may have at most {MAX_PASSWORD_LENGTH} characters.",
            zh=f"密码最多 {MAX_PASSWORD_LENGTH} 个字符。",
            param="password",
        )


def hash_password(password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    return hasher.hash(password)


def verify_password(stored_hash: str, password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
