"""Friendships: requests, acceptances, the friend list. Every SQL statement about them is here.

A pending request is one row (requester → addressee, ``pending``); an accepted
friendship is two rows (both directions, ``accepted``) so "my friends" is one
index range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

import aiomysql

from schemas.errors import ErrorCode, ImError

Status = Literal["pending", "accepted"]
PENDING: Final = "pending"
ACCEPTED: Final = "accepted"


@dataclass(frozen=True)
class FriendList:
    friends: list[str] = field(default_factory=list)
    incoming: list[str] = field(default_factory=list)  # requests waiting for my answer
    outgoing: list[str] = field(default_factory=list)  # my requests not answered yet


@dataclass(frozen=True)
class Outcome:
    """Where a request or acceptance left the pair.

    ``changed`` is False when it only repeated an earlier call. ``since`` is when
    the pending request (or the friendship) began: with the two user ids it names
    this request or friendship, so a repeated call can re-send the same notice.
    """

    status: Status
    changed: bool
    since: str


class FriendStore:
    def __init__(self, pool: aiomysql.Pool) -> None:
        self.pool = pool

    async def _row(
        self, cur: aiomysql.Cursor, user_id: str, friend_id: str
    ) -> tuple[str, str] | None:
        """(status, created_at) of the row user_id → friend_id, if there is one."""
        await cur.execute(
            "SELECT status, created_at FROM friendships WHERE user_id = %s AND friend_id = %s",
            (user_id, friend_id),
        )
        row = await cur.fetchone()
        return (row[0], _instant(row[1])) if row else None

    async def request(self, requester: str, addressee: str) -> Outcome:
        """Ask ``addressee`` for friendship.

        A repeated request changes nothing (``changed`` False). If ``addressee``
        had already asked ``requester``, this accepts that request instead.
        """
        if requester == addressee:
            raise ImError(ErrorCode.BAD_REQUEST, "you cannot befriend yourself")
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            mine = await self._row(cur, requester, addressee)
            theirs = await self._row(cur, addressee, requester)
        if mine is not None and mine[0] == ACCEPTED:
            raise ImError(ErrorCode.BAD_REQUEST, f"{addressee} is already your friend")
        if mine is not None:
            return Outcome(PENDING, changed=False, since=mine[1])
        if theirs is not None and theirs[0] == PENDING:
            return await self.accept(requester, addressee)
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            inserted = await cur.execute(
                "INSERT IGNORE INTO friendships (user_id, friend_id, status) VALUES (%s, %s, %s)",
                (requester, addressee, PENDING),
            )
            row = await self._row(cur, requester, addressee)
        if row is None:  # rejected or removed in between: report the request as sent
            return Outcome(PENDING, changed=bool(inserted), since="")
        # They may have accepted it in the instant since the insert.
        status: Status = ACCEPTED if row[0] == ACCEPTED else PENDING
        return Outcome(status, changed=bool(inserted), since=row[1])

    async def accept(self, addressee: str, requester: str) -> Outcome:
        """``addressee`` accepts ``requester``'s pending request (again: no change)."""
        async with self.pool.acquire() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cur:
                    updated = await cur.execute(
                        "UPDATE friendships SET status = %s"
                        " WHERE user_id = %s AND friend_id = %s AND status = %s",
                        (ACCEPTED, requester, addressee, PENDING),
                    )
                    if updated:
                        await cur.execute(
                            "INSERT INTO friendships (user_id, friend_id, status)"
                            " VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE status = VALUES(status)",
                            (addressee, requester, ACCEPTED),
                        )
                    row = await self._row(cur, requester, addressee)
                await conn.commit()
            except BaseException:
                await conn.rollback()
                raise
        if row is None or row[0] != ACCEPTED:
            raise ImError(ErrorCode.NOT_FOUND, f"no pending friend request from {requester}")
        return Outcome(ACCEPTED, changed=bool(updated), since=row[1])

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


def _instant(value: datetime | str | None) -> str:
    """A row's timestamp as text, exact to the millisecond stored."""
    return value.isoformat() if isinstance(value, datetime) else str(value or "")
