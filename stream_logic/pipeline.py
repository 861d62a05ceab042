"""One batch of client messages: sequence, route, publish, then remember (seed steps 9-12).

Order of effects per batch, which is what makes a crash at any point safe:

1. sequence every message against the conversation states (in memory only);
2. look up the recipients' routes and the connectors' liveness (pipelined);
3. publish the sequenced messages to the persist topic and write the offline
   lists — the message is durable from here on;
4. publish the push records (deliveries, send results) to the connectors' topics;
5. write the new conversation states to the Faust table (its changelog);
6. return, and only then are the input records acked (offsets committed later,
   after Faust flushed the changelog).

A crash before 5 replays the batch from the old state and reproduces the same
msg_ids, seqs and timestamps (re-sent records are identical, every consumer is
idempotent on msg_id); a crash after 5 skips the applied records by offset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

import msgspec
from aiokafka.partitioner import murmur2

from config.settings import Settings
from schemas.errors import ErrorCode
from schemas.records import ClientMessage, SendResult, StoredMessage, decode_client_message, encode
from schemas.topics import persist_topic, push_topic
from store.offline import OfflineStore
from store.register import RegisterStore
from stream_logic import routing, sequencing
from stream_logic.publishing import OutputProducer
from stream_logic.retrying import until_done

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One record of the msg topic, as read."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class BatchReport:
    """What a batch did (for logs and tests)."""

    new: int = 0
    retries: int = 0
    replays: int = 0
    rejected: int = 0
    undecodable: int = 0
    offline: int = 0
    pushes: int = 0
    conversations: set[str] = field(default_factory=set)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) puts ``key`` in."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class MessagePipeline:
    """Runs batches of the msg topic; ``states`` is the Faust table (conv_id bytes → state)."""

    def __init__(
        self,
        settings: Settings,
        states: MutableMapping[bytes, bytes],
        register: RegisterStore,
        offline: OfflineStore,
        outputs: OutputProducer,
    ) -> None:
        self.settings = settings
        self.states = states
        self.register = register
        self.offline = offline
        self.outputs = outputs

    def decode(
        self, records: Sequence[Incoming]
    ) -> tuple[list[tuple[Incoming, ClientMessage]], int]:
        """Decode the batch; a bad record is logged with its position and skipped."""
        decoded = []
        bad = 0
        for record in records:
            try:
                decoded.append((record, decode_client_message(record.value)))
            except (msgspec.DecodeError, UnicodeDecodeError) as error:
                bad += 1
                log.error(
                    "skipping undecodable record at %s[%d]@%d: %s: %r",
                    self.settings.msg_topic,
                    record.partition,
                    record.offset,
                    error,
                    record.value[:200],
                )
        return decoded, bad

    async def handle(self, records: Sequence[Incoming]) -> BatchReport:
        """Process one batch to the end, retrying failed steps; never raises (but cancel)."""
        decoded, bad = self.decode(records)
        report = await until_done(lambda: self._run(decoded), "msg batch")
        report.undecodable = bad
        return report

    def _misplaced(self, record: Incoming, message: ClientMessage) -> bool:
        # A conversation's state lives with the partition its id hashes to; a
        # record elsewhere (wrong key) would be sequenced against the wrong state.
        key = message.conv_id.encode()
        expected = partition_for(key, self.settings.msg_partitions)
        return record.key != key or record.partition != expected

    async def _run(self, decoded: Sequence[tuple[Incoming, ClientMessage]]) -> BatchReport:
        report = BatchReport()
        working: dict[str, sequencing.ConversationState] = {}
        changed: set[str] = set()
        fresh: list[StoredMessage] = []
        replies: list[routing.Reply] = []

        for record, message in decoded:
            if self._misplaced(record, message):
                log.error(
                    "record at %s[%d]@%d has key %r for conversation %r: refused",
                    self.settings.msg_topic,
                    record.partition,
                    record.offset,
                    record.key,
                    message.conv_id,
                )
                error = SendResult(
                    client_msg_id=message.client_msg_id,
                    sender=message.sender,
                    sender_device=message.sender_device,
                    conv_id=message.conv_id,
                    error_code=int(ErrorCode.INTERNAL),
                    error_message="message published under the wrong key",
                )
                replies.append(routing.Reply(message.reply_connector, error))
                report.rejected += 1
                continue
            conv_id = message.conv_id
            if conv_id not in working:
                working[conv_id] = sequencing.decode_state(self.states.get(conv_id.encode()))
            state, outcome = sequencing.apply(working[conv_id], message, record.offset)
            if state is not working[conv_id]:
                working[conv_id] = state
                changed.add(conv_id)
            if outcome.kind == "replay":
                report.replays += 1
                continue
            if outcome.kind == "new":
                assert outcome.message is not None
                fresh.append(outcome.message)
                report.new += 1
            elif outcome.kind == "retry":
                report.retries += 1
            else:
                report.rejected += 1
            if outcome.result is not None:
                replies.append(routing.Reply(message.reply_connector, outcome.result))

        users = {user for message in fresh for user in routing.recipients_of(message)}
        reply_connectors = {r.connector_id for r in replies if r.connector_id is not None}
        routes, alive = await routing.lookup(self.register, users, reply_connectors)
        plan = routing.plan(fresh, replies, routes, alive)

        # Durable first: the archive's input and the offline lists.
        persist = persist_topic(self.settings)
        await asyncio.gather(
            self.outputs.publish([(persist, m.conv_id, encode(m)) for m in fresh]),
            self.offline.add_many(plan.offline),
        )
        # Then the push queues: a recipient never sees a message that is not durable.
        pushes = [
            (push_topic(self.settings, connector_id), record.recipients[0], encode(record))
            for connector_id, records in plan.pushes.items()
            for record in records
        ]
        await self.outputs.publish(pushes)

        # Last, remember: the table's changelog is flushed by Faust before it commits offsets.
        for conv_id in changed:
            self.states[conv_id.encode()] = sequencing.encode_state(working[conv_id])

        report.offline = len(plan.offline)
        report.pushes = len(pushes)
        report.conversations = set(working)
        return report
