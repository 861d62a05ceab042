"""Publishes system messages into the chat pipeline (the msg topic), like a connector does.

They are sequenced, routed, archived and kept for offline users by the same
stream logic as chat messages; only the sender ("system") and kind differ.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from config.settings import Settings
from schemas import conversations, records
from schemas.records import ClientMessage
from schemas.topics import msg_topic

SYSTEM_SENDER = "system"


def new_push_id() -> str:
    return f"p{secrets.token_hex(8)}"


class SystemPublisher:
    """Turns push requests into ClientMessage records on the msg topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
        )

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def _publish(self, messages: Sequence[ClientMessage]) -> None:
        """Send and wait until Kafka has every record (acks=all)."""
        topic = msg_topic(self.settings)
        futures = [
            await self.producer.send(topic, records.encode(message), key=message.conv_id.encode())
            for message in messages
        ]
        for future in futures:
            await future

    async def to_users(
        self, push_id: str, user_ids: Sequence[str], text: str, data: dict[str, Any] | None
    ) -> None:
        """One system message per user, in that user's system conversation ``s:<user>``."""
        now = int(time.time() * 1000)
        await self._publish(
            [
                ClientMessage(
                    client_msg_id=f"{push_id}:{user_id}",
                    sender=SYSTEM_SENDER,
                    conv_id=conversations.system(user_id),
                    kind="system",
                    to=user_id,
                    text=text,
                    data=data,
                    received_ts=now,
                )
                for user_id in dict.fromkeys(user_ids)
            ]
        )

    async def to_group(
        self, push_id: str, group_id: str, text: str, data: dict[str, Any] | None
    ) -> None:
        """A system message in the group's conversation: every member gets it, in group order."""
        await self._publish(
            [
                ClientMessage(
                    client_msg_id=push_id,
                    sender=SYSTEM_SENDER,
                    conv_id=conversations.group(group_id),
                    kind="system",
                    group_id=group_id,
                    text=text,
                    data=data,
                    received_ts=int(time.time() * 1000),
                )
            ]
        )

    async def broadcast(self, push_id: str, text: str, data: dict[str, Any] | None) -> None:
        """To everyone online now (offline users do not get broadcasts)."""
        await self._publish(
            [
                ClientMessage(
                    client_msg_id=push_id,
                    sender=SYSTEM_SENDER,
                    conv_id=conversations.BROADCAST,
                    kind="system",
                    text=text,
                    data=data,
                    received_ts=int(time.time() * 1000),
                )
            ]
        )
