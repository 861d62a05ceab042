"""Publishes system messages into the chat pipeline (the msg topic), like a connector does.

They are sequenced, routed, archived and kept for offline users by the same
stream logic as chat messages; only the sender ("system") and kind differ.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from config.settings import Settings
from schemas import conversations, records
from schemas.errors import ErrorCode, ImError
from schemas.records import ClientMessage
from schemas.topics import msg_topic

log = logging.getLogger(__name__)


def new_push_id() -> str:
    """A fresh push id (it becomes the client_msg_id of the messages it makes)."""
    return f"p{secrets.token_hex(8)}"


def stable_push_id(*parts: str) -> str:
    """A push id derived from what the push is about: publishing it again is a retry.

    The logic drops a repeated (sender, client_msg_id), so a notice re-sent with the
    same id (after an uncertain first attempt) reaches its user once.
    """
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=10).hexdigest()
    return f"p{digest}"


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
        self.started = False

    async def start(self) -> None:
        """Connect to Kafka; raises if the cluster cannot be reached."""
        await self.producer.start()
        self.started = True

    async def stop(self) -> None:
        """Flush what is queued, then close."""
        if self.started:
            self.started = False
            await self.producer.stop()

    async def _publish(self, messages: Sequence[ClientMessage]) -> None:
        """Send and wait until Kafka has every record (acks=all)."""
        topic = msg_topic(self.settings)
        try:
            futures = [
                await self.producer.send(
                    topic, records.encode(message), key=message.conv_id.encode()
                )
                for message in messages
            ]
            for future in futures:
                await future
        except KafkaError as error:
            log.warning("cannot publish %d system messages: %r", len(messages), error)
            raise ImError(ErrorCode.UNAVAILABLE, "message queue unavailable, retry") from None

    async def to_users(
        self, push_id: str, user_ids: Sequence[str], text: str, data: dict[str, Any] | None
    ) -> None:
        """One system message per user, in that user's system conversation ``s:<user>``."""
        now = int(time.time() * 1000)
        await self._publish(
            [
                ClientMessage(
                    client_msg_id=f"{push_id}:{user_id}",
                    sender=conversations.SYSTEM_SENDER,
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
                    sender=conversations.SYSTEM_SENDER,
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
                    sender=conversations.SYSTEM_SENDER,
                    conv_id=conversations.BROADCAST,
                    kind="system",
                    text=text,
                    data=data,
                    received_ts=int(time.time() * 1000),
                )
            ]
        )
