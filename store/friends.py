"""Friendships: requests, acceptances, the friend list. Every SQL statement about them is here.

A pending request is one row (requester → addressee, ``pending``); an accepted
friendship is two rows (both directions, ``accepted``) so "my friends" is one
index range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiomysql

from schemas.errors import ErrorCode, ImError

PENDING = "pending"
ACCEPTED = "accepted"


@dataclass(frozen=True)
class FriendList:
    friends: list[str] = field(default_factory=list)
    incoming: list[str] = field(default_factory=list)  # requests waiting for my answer
    outgoing: list[str] = field(default_factory=list)  # my requests not answered yet


class FriendStore:
    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def _status(self, cur: aiomysql.Cursor, user_id: str, friend_id: str) -> str | None:
        await cur.execute(
            "SELECT status FROM friendships WHERE user_id = %s AND friend_id = %s",
            (user_id, friend_id),
        )
        row = await cur.fetchone()
        return row[0] if row else None

    async def request(self, requester: str, addressee: str) -> bool:
        """Ask ``addressee`` for friendship.

        Returns True when a new request was recorded, False when it was already
        pending. If ``addressee`` had already asked ``requester``, this accepts.
        """
        if requester == addressee:
            raise ImError(ErrorCode.BAD_REQUEST, "you cannot befriend yourself")
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            mine = await self._status(cur, requester, addressee)
            if mine == ACCEPTED:
                raise ImError(ErrorCode.BAD_REQUEST, f"{addressee} is already your friend")
            if mine == PENDING:
                return False
        if await self._pending_from(addressee, requester):
            await self.accept(requester, addressee)
            return True
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "INSERT IGNORE INTO friendships (user_id, friend_id, status) VALUES (%s, %s, %s)",
                (requester, addressee, PENDING),
            )
        return True

    async def _pending_from(self, requester: str, addressee: str) -> bool:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            return await self._status(cur, requester, addressee) == PENDING

    async def accept(self, addressee: str, requester: str) -> None:
        """``addressee`` accepts ``requester``'s pending request."""
        async with self.pool.acquire() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    updated = await cur.execute(
                        "UPDATE friendships SET status = %s"
                        " WHERE user_id = %s AND friend_id = %s AND status = %s",
                        (ACCEPTED, requester, addressee, PENDING),
                    )
                    if not updated:
                        raise ImError(
                            ErrorCode.NOT_FOUND, f"no pending friend request from {requester}"
                        )
                    await cur.execute(
                        "INSERT INTO friendships (user_id, friend_id, status) VALUES (%s, %s, %s)"
                        " ON DUPLICATE KEY UPDATE status = VALUES(status)",
                        (addressee, requester, ACCEPTED),
                    )
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise

    async def reject(self, addressee: str, requester: str) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            deleted = await cur.execute(
                "DELETE FROM friendships WHERE user_id = %s AND friend_id = %s AND status = %s",
                (requester, addressee, PENDING),
            )
        if not deleted:
            raise ImError(ErrorCode.NOT_FOUND, f"no pending friend request from {requester}")

    async def remove(self, user_id: str, friend_id: str) -> None:
        """End a friendship (both directions)."""
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            deleted = await cur.execute(
                "DELETE FROM friendships WHERE status = %s AND"
                " ((user_id = %s AND friend_id = %s) OR (user_id = %s AND friend_id = %s))",
                (ACCEPTED, user_id, friend_id, friend_id, user_id),
            )
        if not deleted:
            raise ImError(ErrorCode.NOT_FOUND, f"{friend_id} is not your friend")

    async def list(self, user_id: str) -> FriendList:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(
                "SELECT friend_id, status FROM friendships WHERE user_id = %s ORDER BY friend_id",
                (user_id,),
            )
            mine = await cur.fetchall()
            await cur.execute(
                "SELECT user_id FROM friendships WHERE friend_id = %s AND status = %s"
                " ORDER BY user_id",
                (user_id, PENDING),
            )
            incoming = [row[0] for row in await cur.fetchall()]
        return FriendList(
            friends=[friend for friend, status in mine if status == ACCEPTED],
            incoming=incoming,
            outgoing=[friend for friend, status in mine if status == PENDING],
        )
