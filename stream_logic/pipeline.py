"""One batch of client messages: sequence, route, publish, then remember (seed steps 9-12).

Order of effects per batch, which is what makes a crash at any point safe:

0. look up group membership for the batch's group messages that do not carry the
   connector's verdict (one Redis call each);
1. sequence every message against the conversation states (in memory only);
2. look up the recipients' routes and the connectors' liveness (pipelined);
3. in one round: publish the sequenced messages to the persist topic (group
   messages also to the fan-out topic, see stream_logic/fanout.py) together
   with the push records (deliveries, broadcasts, send results) for the
   connectors' topics and the states of the batch before, and write the
   offline lists; wait until Kafka acknowledged every record (acks=all) and
   Redis answered;
4. push records for recipients routed offline who logged in meanwhile;
5. stage the new conversation states in the Faust table's local store; they
   reach its changelog in the next batch's round 3, or through
   ``ConversationStates.flush`` when no batch follows at once;
6. the input records are acked only once their states are in the changelog,
   so a batch's acks follow the next batch's round 3 (or the flush).

Why the push records need not wait for the persist topic: the input record is
already durable on the msg topic (acks=all), stays unacked until step 6, and
sequencing is a pure function of the state and the record. Until the states
are in the changelog a crash replays the batch from the state before it and
reproduces the same msg_ids, seqs and timestamps: whatever was pushed is
re-published identically (every consumer is idempotent on msg_id, clients drop
the copies) and whatever was not published yet is published then. Only the
state write must wait for every output, which holds because a batch's states
are staged after its own round 3 and written in a later one; once written, a
replay skips the applied records by offset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from config.settings import Settings
from schemas.errors import ErrorCode
from schemas.records import (
    ClientMessage,
    FanoutRecord,
    PushRecord,
    SendResult,
    decode_client_message,
    encode,
)
from schemas.topics import fanout_topic, partition_for, persist_topic, push_topic
from store.offline import OfflineStore
from store.register import RegisterStore
from stream_logic import routing, sequencing
from stream_logic.publishing import OutputProducer
from stream_logic.retrying import until_done

log = logging.getLogger(__name__)

# A membership lookup that takes longer is answered UNAVAILABLE to the sender
# rather than holding up the 1:1 messages of the same batch.
MEMBERSHIP_TIMEOUT_S = 5.0
# Lookups in flight at once: each holds a Redis connection from a bounded pool.
MEMBERSHIP_CONCURRENCY = 16


class Membership(Protocol):
    async def is_member(self, group_id: str, user_id: str) -> bool: ...


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
    to_fanout: int = 0
    conversations: set[str] = field(default_factory=set)


class ConversationStates:
    """The sequencer's state per conversation: a Faust table whose changelog we write.

    Faust buffers a table's changelog writes and flushes them before it commits
    offsets, yet once after a kill -9 a committed offset ran ahead of the state
    it produced (a conversation's seq went back by ten). So the states are
    published by the pipeline itself, with acks=all, and a batch's input is
    acked only once its states are in Kafka; same key, partitioner and bytes as
    Faust's own writes, so recovery reads them as usual.

    A batch's new states are staged (:meth:`stage`) in the local store once its outputs
    are acknowledged, and go out in the next batch's produce round
    (:meth:`unwritten` / :meth:`written`), or alone through :meth:`flush` when
    no batch follows: one produce round per batch instead of two.
    """

    def __init__(self, table: Any, outputs: OutputProducer) -> None:
        self.table = table
        self.outputs = outputs
        self._unwritten: dict[str, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.get(key)
        return value

    def stage(self, states: Mapping[str, bytes]) -> None:
        """Keep new states (their batch's outputs are durable) until they are written."""
        for conv_id, raw in states.items():
            self.table.data[conv_id.encode()] = raw
            self._unwritten[conv_id] = raw

    def unwritten(self) -> list[tuple[str, str, bytes]]:
        """Changelog records of the states staged and not yet written, to publish."""
        changelog = self.table.changelog_topic.get_topic_name()
        return [(changelog, conv_id, raw) for conv_id, raw in self._unwritten.items()]

    def written(self, records: Sequence[tuple[str, str, bytes]]) -> None:
        """Forget the states of these records, now in Kafka (unless staged anew since)."""
        for _, conv_id, raw in records:
            if self._unwritten.get(conv_id) is raw:
                del self._unwritten[conv_id]

    async def flush(self) -> None:
        """Write every staged state; returns once Kafka has them."""
        records = self.unwritten()
        await self.outputs.publish(records)
        self.written(records)


class MessagePipeline:
    """Runs batches of the msg topic; ``states`` holds each conversation's sequencing state."""

    def __init__(
        self,
        settings: Settings,
        states: ConversationStates,
        register: RegisterStore,
        offline: OfflineStore,
        outputs: OutputProducer,
        groups: Membership | None = None,
    ) -> None:
        self.settings = settings
        self.states = states
        self.register = register
        self.offline = offline
        self.outputs = outputs
        self.groups = groups
        self.liveness = routing.ConnectorLiveness(register)

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

    async def _membership(
        self, messages: Sequence[ClientMessage]
    ) -> dict[tuple[str, str], bool | None]:
        """(group_id, sender) → is a member, for sends that carry no verdict; None where
        the lookup failed."""
        pairs = list(
            dict.fromkeys(
                (m.group_id, m.sender)
                for m in messages
                if m.group_id is not None
                and m.sender_is_member is None
                and sequencing.needs_membership(m)
            )
        )
        if not pairs:
            return {}

        slots = asyncio.Semaphore(MEMBERSHIP_CONCURRENCY)

        async def check(group_id: str, user: str) -> bool | None:
            if self.groups is None:
                return None
            try:
                async with slots:
                    return await asyncio.wait_for(
                        self.groups.is_member(group_id, user), MEMBERSHIP_TIMEOUT_S
                    )
            except Exception as error:  # Redis/MySQL trouble: the sender gets UNAVAILABLE
                log.warning("membership of %s in %s unknown: %r", user, group_id, error)
                return None

        answers = await asyncio.gather(*(check(group_id, user) for group_id, user in pairs))
        return dict(zip(pairs, answers, strict=True))

    def _misplaced(self, record: Incoming, message: ClientMessage) -> bool:
        # A conversation's state lives with the partition its id hashes to; a
        # record elsewhere (wrong key) would be sequenced against the wrong state.
        key = message.conv_id.encode()
        expected = partition_for(key, self.settings.msg_partitions)
        return record.key != key or record.partition != expected

    def _push_records(
        self, pushes: Mapping[str, Sequence[PushRecord]]
    ) -> list[tuple[str, str, bytes]]:
        """(topic, key, value) of push records, per connector in batch order."""
        return [
            (push_topic(self.settings, connector_id), routing.push_key(record), encode(record))
            for connector_id, records in pushes.items()
            for record in records
        ]

    async def _run(self, decoded: Sequence[tuple[Incoming, ClientMessage]]) -> BatchReport:
        report = BatchReport()
        working: dict[str, sequencing.ConversationState] = {}
        changed: set[str] = set()
        deliveries: list[routing.Delivery] = []
        to_fanout: list[FanoutRecord] = []
        replies: list[routing.Reply] = []
        membership = await self._membership([message for _, message in decoded])

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
            # The connector's verdict when it carries one: a replay then decides the same.
            is_member = message.sender_is_member
            if is_member is None and message.group_id is not None:
                is_member = membership.get((message.group_id, message.sender))
            state, outcome = sequencing.apply(working[conv_id], message, record.offset, is_member)
            if state is not working[conv_id]:
                working[conv_id] = state
                changed.add(conv_id)
            if outcome.kind == "replay":
                report.replays += 1
                continue
            if outcome.kind == "new":
                assert outcome.message is not None
                stored = outcome.message
                if stored.group_id is not None:
                    # Members are resolved by the fan-out agent, off this path.
                    to_fanout.append(
                        FanoutRecord(message=stored, sender_device=message.sender_device)
                    )
                else:
                    deliveries.append(
                        routing.Delivery(
                            stored, routing.recipients_of(stored), message.sender_device
                        )
                    )
                report.new += 1
            elif outcome.kind == "retry":
                report.retries += 1
            else:
                report.rejected += 1
            if outcome.result is not None:
                replies.append(routing.Reply(message.reply_connector, outcome.result))

        users = {user for delivery in deliveries for user in delivery.users()}
        reply_connectors = {r.connector_id for r in replies if r.connector_id is not None}
        routes, alive = await routing.lookup(self.register, users, reply_connectors, self.liveness)
        live: list[str] = []
        if any(routing.is_broadcast(delivery.message) for delivery in deliveries):
            live = [info.connector_id for info in await self.register.live_connectors()]
        plan = routing.plan(deliveries, replies, routes, alive, live)

        # One round: the archive's and the fan-out's input, the push records, the
        # states of the batches before (their outputs are durable) and the offline
        # lists together (see the module docstring for why this is safe).
        persist, fanout = persist_topic(self.settings), fanout_topic(self.settings)
        sequenced = [d.message for d in deliveries] + [f.message for f in to_fanout]
        outputs = [(persist, m.conv_id, encode(m)) for m in sequenced]
        outputs += [(fanout, f.message.conv_id, encode(f)) for f in to_fanout]
        outputs += self._push_records(plan.pushes)
        earlier_states = self.states.unwritten()
        await asyncio.gather(
            self.outputs.publish(outputs + earlier_states),
            self.offline.add_many(plan.offline),
        )
        self.states.written(earlier_states)
        # After the offline writes: a recipient who logged in since the lookup.
        late = self._push_records(await routing.late_logins(self.register, plan.offline))
        await self.outputs.publish(late)

        # Every output is durable: the next batch sequences from these states, and
        # they go out with its outputs (or through ConversationStates.flush).
        self.states.stage(
            {conv_id: sequencing.encode_state(working[conv_id]) for conv_id in changed}
        )

        report.offline = len(plan.offline)
        report.pushes = sum(len(records) for records in plan.pushes.values()) + len(late)
        report.to_fanout = len(to_fanout)
        report.conversations = set(working)
        return report
