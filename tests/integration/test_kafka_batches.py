"""PartitionBatches against the real broker: Kafka's partitions, the given order, nothing lost."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config.settings import Settings
from schemas.topics import partition_for
from store.kafka_batches import PartitionBatches
from tests.integration.conftest import create_topic

PARTITIONS = 4


async def _read_all(settings: Settings, topic: str, count: int) -> list[tuple[int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        found: list[tuple[int, bytes, bytes]] = []
        async with asyncio.timeout(30):
            while len(found) < count:
                for tp, records in (await consumer.getmany(timeout_ms=1_000)).items():
                    found.extend((tp.partition, r.key, r.value) for r in records)
        return found
    finally:
        await consumer.stop()


async def test_records_land_in_kafkas_partitions_in_the_given_order(settings: Settings) -> None:
    topic = f"test.batches.{secrets.token_hex(4)}"
    await create_topic(settings, topic, PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        records = [(topic, f"conv-{i % 7}", f"m{i}".encode()) for i in range(300)]
        # One value too large for a batch of its own (aiokafka's batch is 16 KiB).
        records.append((topic, "conv-big", b"x" * 40_000))
        sent = await PartitionBatches(producer).send(records)
        await asyncio.gather(*(delivery for delivery, _ in sent))
    finally:
        await producer.stop()

    positions = sorted(p for _, batch in sent for p in batch)
    assert positions == list(range(len(records)))  # every record in exactly one delivery

    found = await _read_all(settings, topic, len(records))
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for partition, key, value in found:
        assert partition == partition_for(key, PARTITIONS)  # Kafka's default partitioner
        by_key[key].append(value)
    for key in {key for _, key, _ in records}:
        expected = [value for _, k, value in records if k == key]
        assert by_key[key.encode()] == expected  # per key (so per partition) in the given order
