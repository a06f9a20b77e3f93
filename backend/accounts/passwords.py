"""Password hashing with Argon2id, and the password policy.

argon2-cffi's defaults (64 MiB, t=3, p=4) exceed the OWASP minimum. The hasher is passed
in rather than global so that tests can use cheap parameters and exercise rehashing.
Each hash or check holds its 64 MiB for its duration, so at most ``HASHING_AT_ONCE``
run at a time: forty parallel sign-in attempts would otherwise cost 2.5 GB, and they
are CPU-bound anyway, so running more at once than there are cores gains nothing.

The policy follows NIST SP 800-63B rather than composition rules: a length, and no
password a guesser tries first — one of the 30,000 most common passwords (the list
zxcvbn ships), one that contains the account's name, or one made of a few characters
repeated ("aaaaaaaa", "abababab").
"""

from __future__ import annotations

import functools
import os
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from backend.errors import InvalidParameter

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256
#: Fewer different characters than this is a repetition, not a password.
MIN_DISTINCT_CHARACTERS = 5

DEFAULT_HASHER = PasswordHasher()
HASHING_AT_ONCE = max(2, os.cpu_count() or 2)
_hashing = threading.BoundedSemaphore(HASHING_AT_ONCE)


@functools.cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p for p in FREQUENCY_LISTS["passwords"] if len(p) >= MIN_PASSWORD_LENGTH)


def check_password_policy(password: str, *, name: str | None = None) -> None:
    """Refuse a password a guesser would try early (see the module docstring).

    ``name`` is the account's name, when there is one.
    """
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
    lowered = password.lower()
    if name and len(name.strip()) >= 2 and name.strip().lower() in lowered:
        raise InvalidParameter(
            "The password must not contain your user name.", zh="密码不能包含用户名。", param="password"
        )
    if len(set(lowered)) < MIN_DISTINCT_CHARACTERS:
        raise InvalidParameter(
            f"The password repeats too few characters; use at least {MIN_DISTINCT_CHARACTERS} different ones "
            "(a few unrelated words make a good password).",
            zh=f"密码中重复的字符太多，请至少使用 {MIN_DISTINCT_CHARACTERS} 个不同的字符（几个不相关的词组合起来就是好密码）。",
            param="password",
        )
    if lowered in _common_passwords():
        raise InvalidParameter(
            "This password is one of the most common passwords, which are guessed first. Please choose another "
            "(a few unrelated words make a good password).",
            zh="这是最常见的密码之一，会被最先猜到。请换一个（几个不相关的词组合起来就是好密码）。",
            param="password",
        )


def hash_password(password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    with _hashing:
        return hasher.hash(password)


def verify_password(stored_hash: str, password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    try:
        with _hashing:
            return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
