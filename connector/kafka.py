"""The connector's only contact with Kafka: the shared producer and its own push queue."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from config.settings import Settings
from schemas.topics import push_topic
from store.kafka_batches import PartitionBatches

log = logging.getLogger(__name__)

# Client messages wait this long to leave together, across partitions: aiokafka's
# linger is per partition, and with the msg topic's 8 partitions a 2 ms linger
# still sent ~0.9 produce requests per message at 300 msgs/s. One request is in
# flight per broker, so under load records also gather while it is out.
SEND_WINDOW_S = 0.002
# More records than this waiting for the window: ``publish`` waits for them to
# be handed to the producer (backpressure, as when its buffer is full).
MAX_WAITING = 2_000


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
            # No linger: the window below does the gathering.
            linger_ms=0,
        )
        self._batches = PartitionBatches(self._producer)
        self.started = False
        self._waiting: list[tuple[str, str, bytes, asyncio.Future[object]]] = []
        self._sender: asyncio.Task[None] | None = None
        # Windows hand their records over one after the other, so order is kept.
        self._handing_over = asyncio.Lock()

    async def start(self) -> None:
        await self._producer.start()
        self.started = True

    async def publish(self, topic: str, key: str, value: bytes) -> asyncio.Future[object]:
        """Queue a record; the returned future resolves once Kafka acknowledged it (acks=all).

        The record waits up to SEND_WINDOW_S for others to share its produce
        request. Awaiting this call only waits when many records are waiting, so
        a session can keep reading while earlier messages are in flight; records
        reach Kafka in the order they were published. A failure (buffer full,
        broker gone) is set on the returned future.
        """
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._waiting.append((topic, key, value, done))
        sender = self._sender
        if sender is None or sender.done():
            sender = self._sender = asyncio.create_task(self._send_window(), name="publisher")
        if len(self._waiting) >= MAX_WAITING:
            await asyncio.shield(sender)
        return done

    async def _send_window(self) -> None:
        await asyncio.sleep(SEND_WINDOW_S)
        async with self._handing_over:
            window, self._waiting = self._waiting, []
            # Publishes from now on start the next window (it waits for this one).
            self._sender = None
            try:
                sent = await self._batches.send(
                    [(topic, key, value) for topic, key, value, _ in window]
                )
            except Exception as error:  # buffer timeout, producer stopped
                # Some batches may have been handed over already: those senders
                # get the error too, and their retry (same client_msg_id) is
                # answered as a duplicate (docs/protocol.md, "Sending").
                for *_, done in window:
                    if not done.done():
                        done.set_exception(error)
                return
            for acked, positions in sent:
                for position in positions:
                    acked.add_done_callback(partial(_settle, window[position][3]))

    async def publish_and_wait(self, topic: str, key: str, value: bytes) -> None:
        await (await self.publish(topic, key, value))

    async def stop(self) -> None:
        """Flush what is queued, then close."""
        if self.started:
            self.started = False
            while self._sender is not None and not self._sender.done():
                await self._sender
            async with self._handing_over:  # a window still handing over
                pass
            await self._producer.flush()
            await self._producer.stop()


def _settle(done: asyncio.Future[object], acked: asyncio.Future[object]) -> None:
    """Pass the producer's outcome of a record on to the publisher's future."""
    if done.done():
        return
    if acked.cancelled():
        done.cancel()
    elif (error := acked.exception()) is not None:
        done.set_exception(error)
    else:
        done.set_result(acked.result())


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
