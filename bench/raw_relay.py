"""The ceiling: a raw aiokafka relay (produce, consume, produce, consume) on the same broker.

MM-IM's 1:1 path crosses Kafka twice (msg topic, then a push topic), so the
relay does the same with the same message size and the same producer settings
(acks=all, idempotence). The pipeline's rate divided by this one says how much
the logic costs on top of Kafka itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


@dataclass(frozen=True)
class RelayResult:
    messages: int
    message_bytes: int
    seconds: float

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )


def consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-relay-{secrets.token_hex(4)}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
    )


async def run_relay(
    bootstrap: str, messages: int, message_bytes: int, partitions: int = 8
) -> RelayResult:
    """Relay ``messages`` records of ``message_bytes`` through two topics; time it end to end."""
    suffix = secrets.token_hex(4)
    first, second = f"bench.relay.a.{suffix}", f"bench.relay.b.{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in (first, second)])
    finally:
        await admin.close()

    payload = b"x" * message_bytes
    source, relay_out = producer(bootstrap), producer(bootstrap)
    relay_in, sink = consumer(bootstrap, first), consumer(bootstrap, second)
    for client in (source, relay_out, relay_in, sink):
        await client.start()
    try:
        started = time.perf_counter()

        async def produce() -> None:
            pending = [
                await source.send(first, payload, key=str(i % 1000).encode())
                for i in range(messages)
            ]
            await asyncio.gather(*pending)

        async def relay() -> None:
            moved = 0
            while moved < messages:
                batches = await relay_in.getmany(timeout_ms=1000)
                futures = [
                    await relay_out.send(second, record.value, key=record.key)
                    for records in batches.values()
                    for record in records
                ]
                await asyncio.gather(*futures)
                if futures:
                    await relay_in.commit()
                moved += len(futures)

        async def drain() -> None:
            seen = 0
            while seen < messages:
                batches = await sink.getmany(timeout_ms=1000)
                seen += sum(len(records) for records in batches.values())
                if batches:
                    await sink.commit()

        await asyncio.wait_for(asyncio.gather(produce(), relay(), drain()), timeout=300)
        return RelayResult(messages, message_bytes, time.perf_counter() - started)
    finally:
        for client in (source, relay_out, relay_in, sink):
            await client.stop()
