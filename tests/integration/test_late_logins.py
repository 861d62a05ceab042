"""A recipient routed offline who logs in before the offline write still gets the message live."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from config.settings import Settings
from schemas.conversations import direct, message_id
from schemas.records import StoredMessage
from store.register import ConnectorInfo, RegisterStore
from stream_logic.routing import late_logins


@pytest.fixture
async def register(settings: Settings) -> AsyncIterator[RegisterStore]:
    redis = Redis.from_url(settings.redis_url)
    try:
        yield RegisterStore(redis, settings)
    finally:
        await redis.aclose()


def message_to(user: str, seq: int) -> StoredMessage:
    conv = direct("sender", user)
    return StoredMessage(
        msg_id=message_id(conv, seq),
        conv_id=conv,
        seq=seq,
        sender="sender",
        to=user,
        text=f"m{seq}",
        ts=int(time.time() * 1000),
        client_msg_id=f"c{seq}",
    )


async def test_only_users_now_on_a_live_connector_get_a_late_delivery(
    register: RegisterStore, unique: Callable[[str], str]
) -> None:
    came_online, still_offline, on_dead = unique("bob"), unique("carol"), unique("dave")
    live, dead = unique("conn"), unique("gone")
    await register.announce_connector(
        ConnectorInfo(live, "127.0.0.1", 1, 0, 10, int(time.time() * 1000)), ttl_s=30
    )
    await register.bind_session(came_online, "phone", live, "s1")
    await register.bind_session(on_dead, "phone", dead, "s2")  # its connector never announced
    offline = [
        (came_online, message_to(came_online, 1)),
        (still_offline, message_to(still_offline, 1)),
    ]
    offline.append((on_dead, message_to(on_dead, 1)))
    offline.append((came_online, message_to(came_online, 2)))

    pushes = await late_logins(register, offline)

    assert set(pushes) == {live}
    assert [(r.kind, r.recipients, r.message.seq if r.message else None) for r in pushes[live]] == [
        ("deliver", [came_online], 1),
        ("deliver", [came_online], 2),
    ]
    await register.withdraw_connector(live)


async def test_nothing_to_check_when_nobody_was_offline(register: RegisterStore) -> None:
    assert await late_logins(register, []) == {}
