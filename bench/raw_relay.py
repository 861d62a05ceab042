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

from bench.workers import run_processes

CONSUMERS_READY_S = 5.0


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


async def _stage(
    index: int, bootstrap: str, first: str, second: str, messages: int, message_bytes: int
) -> dict[str, float]:
    """One stage in its own process: 0 produces, 1 relays (first → second), 2 drains."""
    started = time.time()
    if index == 0:
        source = producer(bootstrap)
        await source.start()
        try:
            payload = b"x" * message_bytes
            # Let the relay and the sink join their groups first: the clock starts here.
            await asyncio.sleep(CONSUMERS_READY_S)
            started = time.time()
            pending = [
                await source.send(first, payload, key=str(i % 1000).encode())
                for i in range(messages)
            ]
            await asyncio.gather(*pending)
        finally:
            await source.stop()
    elif index == 1:
        relay_in, relay_out = consumer(bootstrap, first), producer(bootstrap)
        await relay_in.start()
        await relay_out.start()
        try:
            moved = 0
            while moved < messages:
                batches = await relay_in.getmany(timeout_ms=1000)
                futures = [
                    await relay_out.send(second, record.value, key=record.key)
                    for records in batches.values()
                    for record in records
                ]
                # As the pipeline does: outputs acknowledged, then the input committed.
                await asyncio.gather(*futures)
                if futures:
                    await relay_in.commit()
                moved += len(futures)
        finally:
            await relay_in.stop()
            await relay_out.stop()
    else:
        sink = consumer(bootstrap, second)
        await sink.start()
        try:
            seen = 0
            while seen < messages:
                batches = await sink.getmany(timeout_ms=1000)
                seen += sum(len(records) for records in batches.values())
                if batches:
                    await sink.commit()
        finally:
            await sink.stop()
    return {"start": started, "end": time.time()}


async def create_topics(bootstrap: str, partitions: int) -> tuple[str, str]:
    suffix = secrets.token_hex(4)
    first, second = f"bench.relay.a.{suffix}", f"bench.relay.b.{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in (first, second)])
    finally:
        await admin.close()
    return first, second


def run_relay(
    bootstrap: str, messages: int, message_bytes: int, partitions: int = 8
) -> RelayResult:
    """Relay ``messages`` records through two topics, one process per stage; time it end to end.

    Producer, relay and sink are separate processes like the pipeline's stages
    (connector, logic, connector), so the ratio to the pipeline is fair.
    """
    first, second = asyncio.run(create_topics(bootstrap, partitions))
    stages = run_processes(
        _stage,
        3,
        (bootstrap, first, second, messages, message_bytes),
        timeout_s=300,
        label=f"raw relay of {messages}",
    )
    producer_start, sink_end = stages[0]["start"], stages[2]["end"]
    return RelayResult(messages, message_bytes, sink_end - producer_start)
