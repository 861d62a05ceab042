"""The connector's only contact with Kafka: the shared producer and its own push queue."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from config.settings import Settings
from schemas.topics import push_topic

log = logging.getLogger(__name__)

# A little batching of client messages costs clients almost nothing in latency.
PRODUCER_LINGER_MS = 2


async def ensure_push_topic(settings: Settings, connector_id: str) -> str:
    """Create ``im.push.<connector_id>`` (one partition) unless it exists; return its name."""
    name = push_topic(settings, connector_id)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, client_id=f"mmim-connector-{connector_id}"
    )
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=1, replication_factor=settings.topic_replication)]
        )
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            if code not in (0, TopicAlreadyExistsError.errno):
                detail = entry[2] if len(entry) > 2 else ""
                raise RuntimeError(f"cannot create topic {topic}: Kafka error {code} {detail}")
    finally:
        await admin.close()
    log.info("push topic %s ready", name)
    return name


class Publisher:
    """The one idempotent producer every session of this connector publishes through."""

    def __init__(self, settings: Settings, connector_id: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"mmim-connector-{connector_id}",
            acks="all",
            enable_idempotence=True,
            linger_ms=PRODUCER_LINGER_MS,
        )
        self.started = False

    async def start(self) -> None:
        await self._producer.start()
        self.started = True

    async def publish(self, topic: str, key: str, value: bytes) -> asyncio.Future[object]:
        """Queue a record; the returned future resolves once Kafka acknowledged it (acks=all).

        Awaiting this call only waits for room in the producer's buffer, so a session
        can keep reading while earlier messages are in flight (their order is kept).
        """
        return await self._producer.send(topic, value=value, key=key.encode())

    async def publish_and_wait(self, topic: str, key: str, value: bytes) -> None:
        await (await self.publish(topic, key, value))

    async def stop(self) -> None:
        """Flush what is queued, then close."""
        if self.started:
            self.started = False
            await self._producer.flush()
            await self._producer.stop()


class PushQueue:
    """This connector's push topic, read in batches, offsets committed after delivery."""

    def __init__(self, settings: Settings, connector_id: str) -> None:
        self.topic = push_topic(settings, connector_id)
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=f"mmim-connector-{connector_id}",
            group_id=f"connector-{connector_id}",
            enable_auto_commit=False,
            # Read from the start the first time: nothing queued for this connector
            # before its first commit may be skipped.
            auto_offset_reset="earliest",
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def next_batch(self, timeout_ms: int, max_records: int) -> list[bytes]:
        """The next record values (possibly none after ``timeout_ms``)."""
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [record.value for records in batches.values() for record in records]

    async def commit(self) -> None:
        """Mark everything returned so far as done."""
        await self._consumer.commit()

    async def rewind(self) -> None:
        """Go back to the last commit, to retry a batch whose delivery failed."""
        await self._consumer.seek_to_committed()

    async def stop(self) -> None:
        await self._consumer.stop()
