"""Password hashing with argon2id.

Hashing and verifying cost tens of milliseconds of CPU on purpose, so the
``*_async`` variants run them in a worker thread: the event loop keeps serving
other requests meanwhile.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from schemas.errors import ErrorCode, ImError

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256

# argon2-cffi's defaults follow RFC 9106's recommended low-memory profile (argon2id).
_hasher = PasswordHasher()

# Verified against when a user does not exist, so a login for an unknown user
# costs the same time as a wrong password and does not reveal which ids exist.
_UNKNOWN_USER_HASH = _hasher.hash("mmim: no such user, nothing matches this")


def check_password_policy(password: str) -> None:
    """Raise ``ImError(BAD_REQUEST)`` unless the password has 8..256 characters."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ImError(
            ErrorCode.BAD_REQUEST,
            f"password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters",
        )


def hash_password(password: str) -> str:
    """An argon2id hash (salted, parameters encoded in the string) of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; a missing or malformed hash never does.

    With ``password_hash=None`` (unknown user) a dummy hash is still verified, to keep
    the timing the same as for a wrong password.
    """
    matched = _matches(password_hash or _UNKNOWN_USER_HASH, password)
    return matched and password_hash is not None


def _matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than the current ones."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread."""
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    """:func:`verify_password` in a worker thread."""
    return await asyncio.to_thread(verify_password, password_hash, password)
