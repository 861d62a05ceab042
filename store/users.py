"""The ``users`` table: who may log in, with which password hash."""

from __future__ import annotations

import re

import aiomysql
import pymysql

from schemas.conversations import ID_PATTERN, SYSTEM_SENDER
from schemas.errors import ErrorCode, ImError

_USER_ID = re.compile(ID_PATTERN)
_DUPLICATE_KEY = 1062  # MySQL/MariaDB ER_DUP_ENTRY


# The push service sends as "system"; nobody may register under that name.
RESERVED_USER_IDS = frozenset({SYSTEM_SENDER})


def check_user_id(user_id: str) -> None:
    """Raise ``ImError(BAD_REQUEST)`` unless ``user_id`` is well formed and not reserved."""
    if not _USER_ID.match(user_id):
        raise ImError(
            ErrorCode.BAD_REQUEST,
            "user_id must be 1 to 64 characters of letters, digits, '_', '.' or '-'",
        )
    if user_id.lower() in RESERVED_USER_IDS:
        raise ImError(ErrorCode.BAD_REQUEST, f"user_id {user_id!r} is reserved")


class UserStore:
    """Reads and writes ``users``; every SQL statement about users is here."""

    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def create(self, user_id: str, password_hash: str) -> None:
        """Add a user; ``ImError(USER_EXISTS)`` if the id is taken (ids compare case-blind)."""
        check_user_id(user_id)
        try:
            async with self.pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO users (user_id, password_hash) VALUES (%s, %s)",
                    (user_id, password_hash),
                )
        except pymysql.err.IntegrityError as error:
            if error.args and error.args[0] == _DUPLICATE_KEY:
                raise ImError(ErrorCode.USER_EXISTS, f"user {user_id!r} already exists") from None
            raise

    async def password_hash(self, user_id: str) -> str | None:
        """The stored hash of exactly ``user_id``, or None if there is no such user."""
        row = await self._row(user_id)
        return row[1] if row else None

    async def exists(self, user_id: str) -> bool:
        """Whether exactly ``user_id`` is a registered user."""
        return await self._row(user_id) is not None

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the hash (after a rehash with stronger parameters)."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "UPDATE users SET password_hash = %s WHERE user_id = %s",
                (password_hash, user_id),
            )

    async def _row(self, user_id: str) -> tuple[str, str] | None:
        if not _USER_ID.match(user_id):
            return None
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT user_id, password_hash FROM users WHERE user_id = %s", (user_id,)
            )
            row = await cur.fetchone()
        # The column's collation is case-insensitive; "Alice" must not log in as "alice",
        # whose routes and conversations are keyed by the exact id.
        if row is None or row[0] != user_id:
            return None
        return str(row[0]), str(row[1])
