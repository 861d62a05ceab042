"""Drains this connector's push topic into its clients' sockets (seed steps 10-12)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Protocol

import msgspec

from connector import metrics
from connector.frames import error_frame, push_frame
from connector.kafka import PushQueue
from connector.sends import PendingSends
from connector.sessions import Session, SessionRegistry
from schemas.protocol import Op, encode
from schemas.records import PushRecord, StoredMessage, decode_push_record

log = logging.getLogger(__name__)

BATCH_MAX_RECORDS = 500
BATCH_WAIT_MS = 200
RETRY_DELAY_S = 1.0
# Offsets are committed at most this often (and at stop), always after the
# deliveries they cover: a commit per batch cost ~0.3 Kafka requests per message.
# A crash replays at most this much more, which is only delivered again (the
# offline lists are idempotent per msg_id and clients drop copies by msg_id).
COMMIT_EVERY_S = 0.2


class OfflineWriter(Protocol):
    async def add_many(self, items: Sequence[tuple[str, StoredMessage]]) -> None: ...


def send_ack_body(record: PushRecord) -> dict[str, object]:
    assert record.result is not None
    result = record.result
    return {
        "client_msg_id": result.client_msg_id,
        "msg_id": result.msg_id,
        "conv_id": result.conv_id,
        "seq": result.seq,
        "ts": result.ts,
    }


class PushConsumer:
    """Reads push records in batches and hands them to the local sessions.

    Every delivered message is first written to the recipient's offline list (the
    "unacked inbox"), then to the recipient's sockets: it leaves the list only on
    PUSH_ACK, so a crash of the client or of this connector loses nothing. The
    offsets are committed after the offline writes and socket writes are done,
    at most every COMMIT_EVERY_S.
    """

    def __init__(
        self,
        queue: PushQueue,
        registry: SessionRegistry,
        pending: PendingSends,
        offline: OfflineWriter,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.pending = pending
        self.offline = offline
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.batches_done = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="push-consumer")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, and stop."""
        self._stopping = True
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        uncommitted = False
        committed_at = time.monotonic()
        while not self._stopping:
            try:
                values = await self.queue.next_batch(BATCH_WAIT_MS, BATCH_MAX_RECORDS)
                if values:
                    await self.process(values)
                    uncommitted = True
                    self.batches_done += 1
                if uncommitted and time.monotonic() - committed_at >= COMMIT_EVERY_S:
                    await self.queue.commit()
                    uncommitted = False
                    committed_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("push batch failed; retrying from the last commit")
                uncommitted = False
                await asyncio.sleep(RETRY_DELAY_S)
                try:
                    await self.queue.rewind()
                except Exception:
                    log.exception("cannot rewind the push queue")
        if uncommitted:
            try:
                await self.queue.commit()
            except Exception:  # replayed after a restart: delivered again, dropped by msg_id
                log.exception("cannot commit the last push batches")

    async def process(self, values: Sequence[bytes]) -> None:
        """Deliver one batch of raw push records."""
        records: list[PushRecord] = []
        for value in values:
            try:
                records.append(decode_push_record(value))
            except msgspec.DecodeError:
                log.error("skipping undecodable push record: %r", value[:200])
        for kind, count in Counter(record.kind for record in records).items():
            metrics.push_records_of(kind).inc(count)

        inbox = [
            (user, record.message)
            for record in records
            if record.kind == "deliver" and record.message is not None
            for user in record.recipients
        ]
        if inbox:
            await self.offline.add_many(inbox)

        outgoing: dict[Session, list[bytes]] = defaultdict(list)
        kicks: list[tuple[Session, str]] = []
        pushes = 0
        for record in records:
            if record.kind == "deliver" and record.message is not None:
                frame = push_frame(record.message)
                sender = record.message.sender
                for user in record.recipients:
                    for session in self.registry.of_user(user):
                        # The sending device has the message already (its SEND_ACK).
                        if user == sender and session.device == record.exclude_device:
                            continue
                        outgoing[session].append(frame)
                        pushes += 1
            elif record.kind == "broadcast" and record.message is not None:
                # Everyone logged in here, now; broadcasts are not kept for offline users.
                frame = push_frame(record.message)
                for user in self.registry.users():
                    for session in self.registry.of_user(user):
                        outgoing[session].append(frame)
                        pushes += 1
            elif record.kind == "send_result" and record.result is not None:
                self._answer_send(record, outgoing)
            elif record.kind == "kick" and record.session_id:
                target = self.registry.by_session_id(record.session_id)
                if target is not None and (
                    not record.recipients or target.user == record.recipients[0]
                ):
                    kicks.append((target, record.reason or "logged_in_elsewhere"))

        metrics.frames_out_of("PUSH").inc(pushes)
        for session, frames in outgoing.items():
            session.write_many(frames)
        for session, reason in kicks:
            log.info("kicking %s: %s", session, reason)
            session.kick(reason, reconnect=False)

    def _answer_send(self, record: PushRecord, outgoing: dict[Session, list[bytes]]) -> None:
        result = record.result
        assert result is not None
        waiting = self.pending.resolve((result.sender, result.sender_device, result.client_msg_id))
        if waiting is None:
            return  # the sender left; it will retry the same client_msg_id after reconnecting
        session, request_id = waiting
        if result.error_code is not None:
            metrics.errors.labels(str(result.error_code)).inc()
            outgoing[session].append(
                error_frame(result.error_code, result.error_message or "send failed", request_id)
            )
        else:
            metrics.frames_out_of("SEND_ACK").inc()
            outgoing[session].append(encode(Op.SEND_ACK, send_ack_body(record), request_id))
