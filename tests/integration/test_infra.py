"""The stack the tests get is real: a Kafka broker, Redis and MariaDB that answer."""

from __future__ import annotations

import secrets
from pathlib import Path

import pymysql
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from config.settings import Settings
from stack.testing import TestStack


async def test_kafka_round_trip_through_the_broker(settings: Settings) -> None:
    topic = f"test.infra.{secrets.token_hex(4)}"
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k") for i in range(5)]
    finally:
        await producer.stop()
    assert [meta.offset for meta in sent] == [0, 1, 2, 3, 4]

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"test-{secrets.token_hex(4)}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[bytes] = []
        while len(received) < 5:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no records from the broker within 10 s"
            for records in batch.values():
                received.extend(record.value for record in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert received == [f"m{i}".encode() for i in range(5)]


async def test_redis_round_trip(settings: Settings) -> None:
    client = aioredis.from_url(settings.redis_url)
    key = f"test:infra:{secrets.token_hex(4)}"
    try:
        assert await client.ping()
        await client.set(key, "value", ex=30)
        assert await client.get(key) == b"value"
    finally:
        await client.delete(key)
        await client.aclose()


def test_mysql_round_trip_with_the_migrated_schema(settings: Settings) -> None:
    connection = pymysql.connect(
        host=settings.mysql_host,
        port=settings.mysql_port,
        user=settings.mysql_user,
        password=settings.mysql_password,
        database=settings.mysql_database,
        autocommit=True,
    )
    user = f"infra-{secrets.token_hex(4)}"
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
        cursor.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in cursor.fetchall()][:1] == [1]
        cursor.execute("INSERT INTO users (user_id, password_hash) VALUES (%s, 'x')", (user,))
        cursor.execute("SELECT user_id FROM users WHERE user_id = %s", (user,))
        assert cursor.fetchone() == (user,)
        cursor.execute("DELETE FROM users WHERE user_id = %s", (user,))


def test_local_broker_is_a_kafka_jvm(stack: TestStack) -> None:
    """In local mode the broker is Apache Kafka's own kafka.Kafka main class in a JVM."""
    if stack.mode != "local":
        pytest.skip("only the local stack runs the broker as a process of ours")
    port = stack.settings.kafka_bootstrap.rsplit(":", 1)[1]
    cmdlines = [
        path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for path in Path("/proc").glob("[0-9]*/cmdline")
        if path.exists()
    ]
    brokers = [cmd for cmd in cmdlines if "kafka.Kafka" in cmd and "java" in cmd]
    assert brokers, "no kafka.Kafka JVM running"
    properties = [
        Path(part) for cmd in brokers for part in cmd.split() if part.endswith("kafka.properties")
    ]
    assert any(f"127.0.0.1:{port}" in path.read_text() for path in properties if path.exists())
