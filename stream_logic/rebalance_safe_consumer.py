"""Faust's Kafka consumer, made to lose no record around a rebalance (issue 4).

The defect: in a group of workers, when one dies (or leaves), the survivor
takes over its partitions, recovers the ``conversations`` table, works a few
batches, then never reads the taken-over partitions again (or stays in table
recovery for ever); their records are never sequenced, acked or archived.

Its root cause is in how Faust's consumer hands records over from aiokafka
(``faust.transport.consumer.Consumer.getmany`` and the aiokafka driver):

- Faust's fetcher task asks the consumer thread for records with
  ``fetcher.fetched_records(active_partitions, timeout=1)``, passing its *live*
  set of active partitions. aiokafka reads an empty set as "no filter". During
  a rebalance Faust pauses every partition, so the set of a fetch still
  waiting across the rebalance becomes empty, and when the new assignment's
  first records arrive that fetch takes every assigned partition's records,
  paused or not (seen: 150 records of a taken-over ``im.msg`` partition,
  70 of ``im.persist``, the whole changelog).
- Faust then drops that batch (the flow is stopped, or the partitions are
  paused) and relies on a seek to the committed offsets (``perform_seek``) to
  read it again. aiokafka seeks only partitions whose committed offset is
  above 0, and table recovery had already positioned the changelog
  partitions. So a partition without a committed offset -- what a worker
  killed with -9 before its first offset commit leaves behind -- stays past the
  dropped records: they are never read. Dropped changelog records leave table
  recovery waiting for them for ever.
- Separately, at the end of recovery Faust resumes the stream partitions,
  seeks, and only then resumes the flow, clearing the streams' buffers:
  records handed over between the resume and the clear are lost, and the rest
  of a batch already in hand is handed over after the clear, past them (then
  the sequencer skips the lost ones as replays when they come again, and
  Faust's drainer skips records below the last offset it handed over).

The corrections, in :class:`RebalanceSafeConsumer` (the app's transport
consumer, stream_logic/app.py):

1. the consumer thread gets a live view of the active partitions that is never
   "no filter" (:class:`ActivePartitions`): a fetch waiting across a rebalance
   takes nothing from paused partitions;
2. the seek to the committed offsets (:func:`seek_to_committed_or_start`) also
   puts every *stream* partition without a committed offset back at the start
   of its log, where Faust reads it from ("earliest", ``read_offset`` None), for
   records still taken and dropped (a partition is active for a moment while
   the new assignment is set up); a WARNING names each partition moved back;
3. stream partitions Faust resumes are held (kept paused) until Faust resumes
   the flow, right after its seek and the clearing of the buffers, so nothing
   is handed over from them before the seek and the clearing. A pause cancels
   a held resume (another rebalance started).

One more change, for latency rather than safety: Faust builds the aiokafka
consumer with a hard-coded ``fetch_max_wait_ms=1500``, and aiokafka sends no
new fetch to a broker while one is in flight. A partition that still had
unconsumed records when a fetch was built is left out of it; if the partitions
in it are quiet, the broker holds it the whole 1.5 s, and the left-out one waits
with it. Under load that was a standing ~1.6-2 s delay on ``im.msg`` and
``im.persist`` with the agents only ~60% busy. :class:`RebalanceSafeConsumer`
sets its own wait (``fetch_max_wait_ms``, from ``IM_LOGIC_FETCH_MAX_WAIT_MS``).
It also sets how much a fetch waits for (``fetch_min_bytes``, from
``IM_LOGIC_FETCH_MIN_BYTES``): aiokafka's 1 byte made nearly every record its
own fetch of all 32 partitions the worker reads, built and parsed in Python --
~300 fetches/s and ~20% of a core in the consumer thread at 1,000 msgs/s.

Replays these cause are what the agents already handle: the sequencer skips
records at or below a conversation's ``last_offset``; the archive, offline
lists and clients are idempotent on msg_id. 2 and 3 apply with Faust's default
offset reset policy, "earliest" (the app's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Set
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)


class ActivePartitions(Set[Any]):
    """A live view of Faust's set of active partitions that is never empty as a filter.

    aiokafka's ``fetched_records(partitions)`` takes every partition's records
    when ``partitions`` is falsy; Faust's set is empty while a rebalance pauses
    everything. This view answers membership from the live set, and is truthy
    even then, so it filters out everything instead.
    """

    def __init__(self, live: Set[Any]) -> None:
        self._live = live

    def __contains__(self, tp: object) -> bool:
        return tp in self._live

    def __iter__(self) -> Iterator[Any]:
        return iter(set(self._live))

    def __len__(self) -> int:
        return len(self._live)

    def __bool__(self) -> bool:
        return True


async def seek_to_committed_or_start(
    consumer: AIOKafkaConsumer, changelog_topics: set[str]
) -> dict[TopicPartition, int | None]:
    """Seek each assigned partition to its committed offset or, without one, to its start.

    Returns the committed offsets (None where there is none), like aiokafka's
    ``seek_to_committed``. Partitions of ``changelog_topics`` without a
    committed offset keep their position. Every offset is looked up first and
    the seeks are applied together at the end.
    """
    partitions = sorted(consumer.assignment())
    committed: dict[TopicPartition, int | None] = {}
    for tp in partitions:
        committed[tp] = await consumer.committed(tp)
    uncommitted = [
        tp for tp, offset in committed.items() if not offset and tp.topic not in changelog_topics
    ]
    rewinds: dict[TopicPartition, tuple[int, int]] = {}
    if uncommitted:
        starts = await consumer.beginning_offsets(uncommitted)
        for tp in uncommitted:
            position = await consumer.position(tp)
            if position > starts[tp]:
                rewinds[tp] = (position, starts[tp])
    # No await from here on: the seeks take effect together.
    for tp, offset in committed.items():
        if offset is not None and offset > 0:
            consumer.seek(tp, offset)
    for tp, (_, start) in rewinds.items():
        consumer.seek(tp, start)
    if rewinds:
        log.warning(
            "rewound %d partition(s) without a committed offset to their start, so records"
            " taken from them before this seek (dropped by Faust if this is a rebalance)"
            " are read again: %s",
            len(rewinds),
            ", ".join(
                f"{tp.topic}[{tp.partition}] {position}->{start}"
                for tp, (position, start) in sorted(rewinds.items())
            ),
        )
    return committed


class RebalanceSafeConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, seeking with :func:`seek_to_committed_or_start`,
    with the consumer's fetch wait (not Faust's 1.5 s)."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer: AIOKafkaConsumer = super()._create_worker_consumer(transport)
        # Read by the fetcher aiokafka builds at start(); Faust offers no setting.
        owner = cast(RebalanceSafeConsumer, self.consumer)
        consumer._fetch_max_wait_ms = owner.fetch_max_wait_ms
        consumer._fetch_min_bytes = owner.fetch_min_bytes
        return consumer

    async def seek_to_committed(self) -> Mapping[Any, int]:
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return await super().seek_to_committed()
        changelog_topics = set(self.app.tables.changelog_topics)
        result: Mapping[Any, int] = await self.call_thread(
            seek_to_committed_or_start, self._ensure_consumer(), changelog_topics
        )
        return result


class RebalanceSafeConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with the three corrections of this module."""

    # A fetch waits at the broker until fetch_min_bytes are there, at most
    # fetch_max_wait_ms (see the module's doc).
    fetch_max_wait_ms = 10
    fetch_min_bytes = 16_384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Stream partitions Faust resumed, kept paused until it resumes the flow.
        self._held: set[Any] = set()
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return RebalanceSafeConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # Faust's signature (it passes both by keyword).
    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:  # noqa: ASYNC109
        if active_partitions is not None:  # None: a client-only app, every partition
            active_partitions = cast(set[Any], ActivePartitions(active_partitions))
        return await super()._getmany(active_partitions, timeout)

    def _holds(self) -> bool:
        return self.app.conf.consumer_auto_offset_reset == "earliest"

    def resume_partitions(self, tps: Iterable[Any]) -> None:
        tps = set(tps)
        if self._holds():
            changelogs = self.app.tables.changelog_topics
            streams = {tp for tp in tps if tp.topic not in changelogs}
            self._held |= streams
            tps -= streams
        super().resume_partitions(tps)

    def pause_partitions(self, tps: Iterable[Any]) -> None:
        tps = set(tps)
        self._held -= tps
        super().pause_partitions(tps)

    def resume_flow(self) -> None:
        super().resume_flow()
        if self._held:
            held, self._held = self._held, set()
            super().resume_partitions(held & self.assignment())
