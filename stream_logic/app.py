"""The Faust app of the logic cluster: ``faust -A stream_logic.app worker -l info``.

Three agents, each reading its topic in batches (stream_logic/batching.py) and
acking a batch only when its effects are durable:

- ``sequence`` on the msg topic: per-conversation seq and msg_id (state in the
  ``conversations`` table), group membership checks, routing of 1:1, system and
  broadcast messages to push queues / offline lists, send results
  (stream_logic/pipeline.py);
- ``fan_out`` on the fan-out topic: group messages to every member
  (stream_logic/fanout.py), so a large group never holds up 1:1 traffic;
- ``persist`` on the persist topic: MySQL archive and Redis recent index
  (stream_logic/persistence.py).

Several workers with the same ``IM_LOGIC_APP_ID`` share the partitions; the
table's changelog follows its partitions through rebalances.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import faust
import mode
from faust.transport.drivers import aiokafka as faust_aiokafka

from config.garbage_collection import freeze_startup_heap
from config.settings import load_settings
from schemas.topics import fanout_topic
from stream_logic.batching import event_batches
from stream_logic.fanout import GroupFanout
from stream_logic.persistence import Persister
from stream_logic.pipeline import ConversationStates, Incoming, MessagePipeline
from stream_logic.rebalance_safe_consumer import RebalanceSafeConsumer
from stream_logic.record_handover import TasklessDrain
from stream_logic.retrying import until_done
from stream_logic.runtime import Runtime
from stream_logic.topics import ensure_topics

log = logging.getLogger(__name__)

# How often the agents log their batch statistics (only while records flow).
STATS_EVERY_S = 10.0
# The archive is off the delivery path (sync reads Redis's recent index, then
# MySQL): letting its batches gather this long costs users nothing and spares
# MySQL and Redis round trips the msg agent would otherwise wait behind.
PERSIST_LINGER_S = 0.05
# When no batch follows within this long, the last batch's states are written in
# a produce round of their own (otherwise they ride with the next batch's). It
# delays only that batch's acks, and spares a request per batch at low rates.
STATES_ALONE_AFTER_S = 0.02


settings = load_settings()


class _IdempotentProducer(faust_aiokafka.Producer):
    """Faust's producer (table changelogs) with the project's producer rules."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _Consumer(TasklessDrain, RebalanceSafeConsumer):
    fetch_max_wait_ms = settings.logic_fetch_max_wait_ms
    fetch_min_bytes = settings.logic_fetch_min_bytes


class _Transport(faust_aiokafka.Transport):
    # Keeps Faust from dropping records around a rebalance and reads again any
    # it still drops; they were lost for good (stream_logic/rebalance_safe_consumer.py).
    Consumer = _Consumer
    Producer = _IdempotentProducer


class LogicApp(faust.App):
    """faust.App whose Kafka producer is idempotent with acks=all and whose consumer
    loses no record around a rebalance (stream_logic/rebalance_safe_consumer.py)."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Any:
        return _Transport(self.conf.broker_producer, self)

    async def on_first_start(self) -> None:
        # Runs before the consumer subscribes: the topics must exist by then.
        await super().on_first_start()
        await ensure_topics(settings)

    async def on_started_init_extra_services(self) -> None:
        await super().on_started_init_extra_services()
        # Start-up is over (tables recovered, agents running): keep its objects
        # out of the collector's full walks (config/garbage_collection.py).
        freeze_startup_heap()


app = LogicApp(
    settings.logic_app_id,
    broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
    # The state is rebuilt from the changelog at start; nothing to keep on disk.
    store="memory://",
    datadir=Path(tempfile.gettempdir()) / f"mmim-logic-{settings.logic_app_id}",
    web_port=settings.logic_web_port,
    topic_partitions=settings.msg_partitions,
    topic_replication_factor=settings.topic_replication,
    producer_acks=-1,
    # A worker killed with -9 is noticed after this long and its partitions move
    # on (Kafka's default of 45-60 s would hold those conversations that long).
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    autodiscover=False,
    # Faust's repaired Cython fast path: a stream takes events already in its
    # buffer without awaiting the channel (and a timeout) for each one.
    cython_optimizations=True,
)

# All three created by ensure_topics (stream_logic/topics.py) before the consumer starts.
# Raw bytes in and out: records are msgspec JSON, decoded by us, so a bad record
# is logged and skipped instead of crashing the agent in Faust's deserializer.
client_messages = app.topic(
    settings.msg_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.msg_partitions,
)
sequenced_messages = app.topic(
    settings.persist_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.msg_partitions,
)
group_messages = app.topic(
    fanout_topic(settings),
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.msg_partitions,
)

# conv_id (bytes) -> sequencing.ConversationState (msgpack). use_partitioner: the
# changelog partition is the key's hash, the same partition as the msg topic's
# record (same key, same partitioner, same partition count), even though a
# batch mixes partitions and the "current event" is not the record's own.
conversations = app.Table(
    "conversations",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.msg_partitions,
    use_partitioner=True,
)

runtime = Runtime(settings)


@app.service
class RuntimeService(mode.Service):
    """Opens the backends once the table is recovered."""

    async def on_start(self) -> None:
        await runtime.start()

    async def on_stop(self) -> None:
        await runtime.stop()


class BatchStats:
    """Batch sizes and busy time of an agent, logged every STATS_EVERY_S while busy.

    Says whether the agent is short of input (small batches, low busy share) or
    of time (large batches, busy near 100%).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since = now
        self.batches = 0
        self.records = 0
        self.busy_s = 0.0
        self.largest = 0
        # Longest time a record waited between its producer and this agent.
        self.longest_wait_ms = 0.0
        self._started = now

    def begin(self, size: int, oldest_ts_ms: int | None = None) -> None:
        """A batch starts; ``oldest_ts_ms``: when its first record was produced."""
        self._started = time.monotonic()
        self.batches += 1
        self.records += size
        self.largest = max(self.largest, size)
        if oldest_ts_ms is not None:
            self.longest_wait_ms = max(self.longest_wait_ms, time.time() * 1000 - oldest_ts_ms)

    def end(self) -> None:
        now = time.monotonic()
        self.busy_s += now - self._started
        window = now - self.since
        if window >= STATS_EVERY_S:
            log.info(
                "%s agent: %d records in %d batches (mean %.1f, max %d), busy %.0f%% of %.1fs,"
                " longest wait since produced %.0f ms",
                self.name,
                self.records,
                self.batches,
                self.records / self.batches,
                self.largest,
                100 * self.busy_s / window,
                window,
                self.longest_wait_ms,
            )
            self._reset(now)


def _produced_ms(event: Any) -> int:
    """When the record was produced (its Kafka timestamp), in ms."""
    return int(event.message.timestamp * 1000)


def _incoming(event: Any) -> Incoming:
    message = event.message
    return Incoming(message.partition, message.offset, message.key, message.value)


@app.agent(client_messages)
async def sequence(stream: faust.StreamT) -> None:
    """Sequence, route and deliver client messages, a batch at a time."""
    await runtime.ready.wait()
    states = ConversationStates(conversations, runtime.outputs)
    pipeline = MessagePipeline(
        settings,
        states,
        runtime.register,
        runtime.offline,
        runtime.outputs,
        groups=runtime.groups,
    )
    stats = BatchStats("msg")
    # Events of processed batches whose states are not in the changelog yet.
    unacked: list[Any] = []

    async def ack_processed() -> None:
        for event in unacked:
            await stream.ack(event)
        unacked.clear()

    async def write_states_when_idle() -> None:
        # No batch waiting to carry the last states: write them alone.
        if unacked:
            await until_done(states.flush, "writing conversation states")
            await ack_processed()

    # Never Faust's take(): it would ack the batch even if our code raised.
    async for events in event_batches(
        app,
        stream,
        settings.logic_batch_size,
        settings.logic_batch_linger_s,
        on_idle=write_states_when_idle,
        idle_after_s=STATES_ALONE_AFTER_S,
    ):
        stats.begin(len(events), _produced_ms(events[0]))
        report = await pipeline.handle([_incoming(event) for event in events])
        # handle() wrote the earlier batches' states, so their input may be acked;
        # this batch's waits for its own states (a crash before replays it).
        await ack_processed()
        unacked.extend(events)
        stats.end()
        log.debug("msg batch: %s", report)
        if report.replays or report.rejected or report.undecodable:
            log.info(
                "msg batch of %d: new=%d retries=%d replays=%d rejected=%d undecodable=%d",
                len(events),
                report.new,
                report.retries,
                report.replays,
                report.rejected,
                report.undecodable,
            )


@app.agent(group_messages)
async def fan_out(stream: faust.StreamT) -> None:
    """Deliver sequenced group messages to the members, a batch at a time."""
    await runtime.ready.wait()
    assert runtime.groups is not None
    fanout = GroupFanout(
        settings, runtime.groups, runtime.register, runtime.offline, runtime.outputs
    )
    async for events in event_batches(
        app, stream, settings.logic_batch_size, settings.logic_batch_linger_s
    ):
        report = await fanout.handle([cast(bytes, event.message.value) for event in events])
        for event in events:
            await stream.ack(event)
        log.debug("fan-out batch: %s", report)


@app.agent(sequenced_messages)
async def persist(stream: faust.StreamT) -> None:
    """Archive sequenced messages to MySQL and the recent index, a batch at a time."""
    await runtime.ready.wait()
    assert runtime.archive is not None
    persister = Persister(runtime.archive, runtime.recent)
    stats = BatchStats("persist")
    async for events in event_batches(app, stream, settings.logic_batch_size, PERSIST_LINGER_S):
        stats.begin(len(events), _produced_ms(events[0]))
        await persister.handle([_incoming(event) for event in events])
        for event in events:
            await stream.ack(event)
        stats.end()


@app.page("/healthz")
async def healthz(web: Any, request: Any) -> Any:
    """200 once the worker recovered its state and reached Redis, MySQL and Kafka."""
    if not runtime.ready.is_set():
        return web.json({"status": "starting"}, status=503)
    return web.json({"status": "ok"})
