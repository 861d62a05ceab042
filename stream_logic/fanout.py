"""Group fan-out: each group message to every member but its sender (issue 5).

The sequencer only checks membership, assigns the group seq (it stays the one
writer per conversation) and writes the message to the fan-out topic; this
stage runs in its own agent on that topic, so a group of thousands costs the
sequencer one record and 1:1 messages keep their short path. Per batch, in
steps of at most ``RECIPIENTS_PER_STEP`` recipients, in order:

1. the member sets, from the Redis cache (store/groups.py; MySQL on a miss);
2. the members' routes, in slices, and their connectors' liveness (a live answer is
   reused for a second, as in the sequencer: routing.ConnectorLiveness);
3. offline lists for members with no live route, in slices of ``OFFLINE_SLICE``
   users (Redis runs other clients' commands between the slices);
4. one ``deliver`` record per message and connector, listing its members there.

Offline writes come before the push records, as in the sequencer, and both are
idempotent per msg_id, so a replay after a crash (the batch is acked only at the
end) repeats deliveries that clients drop by msg_id and loses none. A topic
partition is read in order, so members get a group's messages in seq order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec

from config.settings import Settings
from schemas.records import FanoutRecord, StoredMessage, decode_fanout_record, encode
from schemas.topics import push_topic
from store.register import RegisterStore, SessionRoute
from stream_logic import routing
from stream_logic.publishing import OutputProducer
from stream_logic.retrying import until_done

log = logging.getLogger(__name__)

# Users per offline-list write (one pipeline of Lua calls) and per route lookup.
OFFLINE_SLICE = 500
# Member sets read at once: each read holds a Redis connection from a bounded pool.
MEMBER_READS = 16
# Recipients planned and written per step of a batch (bounds the memory of a batch
# full of big-group messages).
RECIPIENTS_PER_STEP = 20_000


class MemberSource(Protocol):
    async def member_ids(self, group_id: str) -> frozenset[str]: ...


class OfflineLists(Protocol):
    async def add_many(self, items: Sequence[tuple[str, StoredMessage]]) -> None: ...


@dataclass
class FanoutReport:
    """What a fan-out batch did (for logs and tests)."""

    messages: int = 0
    recipients: int = 0
    pushes: int = 0
    offline: int = 0
    undecodable: int = 0


class GroupFanout:
    """Delivers batches of the fan-out topic to the groups' members."""

    def __init__(
        self,
        settings: Settings,
        members: MemberSource,
        register: RegisterStore,
        offline: OfflineLists,
        outputs: OutputProducer,
    ) -> None:
        self.settings = settings
        self.members = members
        self.register = register
        self.offline = offline
        self.outputs = outputs
        # Shared rule with the sequencer: a live answer is reused for a second.
        self.liveness = routing.ConnectorLiveness(register)

    def decode(self, values: Sequence[bytes]) -> tuple[list[FanoutRecord], int]:
        """Decode the batch; a bad record is logged and skipped."""
        records, bad = [], 0
        for value in values:
            try:
                records.append(decode_fanout_record(value))
            except (msgspec.DecodeError, UnicodeDecodeError) as error:
                bad += 1
                log.error("skipping undecodable fan-out record: %s: %r", error, value[:200])
        return records, bad

    async def handle(self, values: Sequence[bytes]) -> FanoutReport:
        """Fan out one batch to the end, retrying failed steps; never raises (but cancel)."""
        records, bad = self.decode(values)
        report = (
            await until_done(lambda: self._run(records), "group fan-out")
            if records
            else FanoutReport()
        )
        report.undecodable = bad
        return report

    async def _run(self, records: Sequence[FanoutRecord]) -> FanoutReport:
        members = await self._member_sets(records)
        report = FanoutReport(messages=len(records))
        # Steps of bounded size, in order: a batch of big-group messages never
        # builds millions of entries at once.
        step: list[FanoutRecord] = []
        size = 0
        for record in records:
            step.append(record)
            size += len(members.get(record.message.group_id or "", ()))
            if size >= RECIPIENTS_PER_STEP:
                await self._deliver(step, members, report)
                step, size = [], 0
        if step:
            await self._deliver(step, members, report)
        return report

    async def _member_sets(self, records: Sequence[FanoutRecord]) -> dict[str, frozenset[str]]:
        group_ids = sorted({r.message.group_id for r in records if r.message.group_id})
        slots = asyncio.Semaphore(MEMBER_READS)

        async def member_ids(group_id: str) -> frozenset[str]:
            async with slots:
                return await self.members.member_ids(group_id)

        member_sets = await asyncio.gather(*(member_ids(g) for g in group_ids))
        return dict(zip(group_ids, member_sets, strict=True))

    async def _deliver(
        self,
        records: Sequence[FanoutRecord],
        members: dict[str, frozenset[str]],
        report: FanoutReport,
    ) -> None:
        deliveries = []
        for record in records:
            message = record.message
            group_members = members.get(message.group_id or "", frozenset())
            recipients = sorted(group_members - {message.sender})
            deliveries.append(routing.Delivery(message, recipients, record.sender_device))

        users = list(dict.fromkeys(user for d in deliveries for user in d.users()))
        routes: dict[str, list[SessionRoute]] = {}
        for start in range(0, len(users), OFFLINE_SLICE):
            routes.update(await self.register.routes_many(users[start : start + OFFLINE_SLICE]))
        connectors = {r.connector_id for user_routes in routes.values() for r in user_routes}
        alive = await self.liveness.alive(connectors) if connectors else set()
        plan = routing.plan(deliveries, [], routes, alive)

        for start in range(0, len(plan.offline), OFFLINE_SLICE):
            await self.offline.add_many(plan.offline[start : start + OFFLINE_SLICE])
            late = await routing.late_logins(
                self.register, plan.offline[start : start + OFFLINE_SLICE]
            )
            for connector_id, late_records in late.items():
                plan.pushes[connector_id].extend(late_records)
        pushes = [
            (push_topic(self.settings, connector_id), routing.push_key(record), encode(record))
            for connector_id, connector_records in plan.pushes.items()
            for record in connector_records
        ]
        await self.outputs.publish(pushes)
        report.recipients += sum(len(d.recipients) for d in deliveries)
        report.pushes += len(pushes)
        report.offline += len(plan.offline)
