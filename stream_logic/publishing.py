"""The logic's own Kafka producer for its outputs: the persist topic and the push queues.

Separate from Faust's producer so every output can be awaited: a batch counts as
done (and its input offsets may be committed) only once Kafka acknowledged all
of its outputs with acks=all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from config.settings import Settings
from store.kafka_batches import PartitionBatches

# No lingering: ``publish`` hands a whole batch's records to the producer without
# yielding to the loop, so its sender drains them all into one produce request
# (aiokafka keeps one request in flight per broker; records added meanwhile go
# in the next one). A linger is per partition and would split that request by
# each partition's batch creation time, and it delays every batch.
LINGER_MS = 0
# A send that cannot complete (broker gone) fails within this, and the batch is retried.
REQUEST_TIMEOUT_MS = 15_000


class OutputProducer:
    """Idempotent, acks=all producer; ``publish`` returns when every record is acknowledged."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._batches: PartitionBatches | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running loop.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self._batches = PartitionBatches(producer)

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            self._batches = None
            await producer.stop()

    async def publish(self, records: Sequence[tuple[str, str, bytes]]) -> None:
        """Send (topic, key, value) records; wait until Kafka has all of them.

        Records are packed into one record batch per partition
        (store/kafka_batches.py), in the order given, so each partition gets
        them in that order.
        """
        if not records:
            return
        assert self._batches is not None, "OutputProducer.start() first"
        sent = await self._batches.send(records)
        await asyncio.gather(*(delivery for delivery, _ in sent))
