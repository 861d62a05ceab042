"""Records handed to aiokafka as one record batch per partition, not one ``send()`` each.

aiokafka's ``send()`` costs a future, a partitioner call (murmur2 in pure
Python) and an accumulator lookup per record. Its batch API packs records into
a ready batch in C. The logic's outputs and the connectors' client messages
both go through :class:`PartitionBatches`; partitions follow Kafka's default
partitioner (cached), like every other producer of these topics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from schemas.topics import partition_for


class PartitionBatches:
    """Sends (topic, key, value) records through ``producer`` in per-partition batches."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        # Partition count per topic (topics are never repartitioned while running).
        self._partitions: dict[str, int] = {}

    async def send(
        self, records: Sequence[tuple[str, str, bytes]]
    ) -> list[tuple[asyncio.Future[object], list[int]]]:
        """Hand the records over; return each batch's delivery future and its records' positions.

        Records keep their order within each partition. A batch's future
        resolves once Kafka acknowledged the whole batch (or fails for all of
        it). A record too large for a batch of its own goes alone through
        ``send()``.
        """
        producer = self.producer
        by_partition: dict[tuple[str, int], list[int]] = {}
        keys: list[bytes] = []
        for position, (topic, key, _) in enumerate(records):
            key_bytes = key.encode()
            keys.append(key_bytes)
            partitions = self._partitions.get(topic)
            if partitions is None:
                partitions = self._partitions[topic] = len(await producer.partitions_for(topic))
            partition = 0 if partitions == 1 else partition_for(key_bytes, partitions)
            by_partition.setdefault((topic, partition), []).append(position)
        sent: list[tuple[asyncio.Future[object], list[int]]] = []
        for (topic, partition), positions in by_partition.items():
            batch = producer.create_batch()
            in_batch: list[int] = []
            for position in positions:
                value = records[position][2]
                if batch.append(key=keys[position], value=value, timestamp=None) is None:
                    # Full: send it and start the next one.
                    if in_batch:
                        sent.append(
                            (await producer.send_batch(batch, topic, partition=partition), in_batch)
                        )
                        batch, in_batch = producer.create_batch(), []
                    if batch.append(key=keys[position], value=value, timestamp=None) is None:
                        # Too large even for an empty batch.
                        alone = await producer.send(
                            topic, value=value, key=keys[position], partition=partition
                        )
                        sent.append((alone, [position]))
                        continue
                in_batch.append(position)
            if in_batch:
                sent.append(
                    (await producer.send_batch(batch, topic, partition=partition), in_batch)
                )
        return sent
