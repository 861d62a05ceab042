"""Where each sequenced message goes (seed steps 9-12): a connector's push queue or offline.

A recipient with at least one route on a live connector gets a ``deliver`` push
record on that connector's topic (one record per message and connector, listing
its recipients there); a recipient with no route, or only routes on dead
connectors, gets the message on their offline list. The sender's other devices
(multi-device sync) get a copy on the connectors holding them, marked with the
sending device so that one is skipped; they get no offline copy (they sync).
A broadcast goes to every live connector as one ``broadcast`` record, with no
recipients and no offline copies. Send results go to the connector that
published the send, if it is still alive (a sender whose connector died retries
after reconnecting and gets the same result again).

The same planning serves 1:1 and system messages in the sequencer and group
messages in the fan-out stage (stream_logic/fanout.py).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from schemas.conversations import BROADCAST
from schemas.records import PushRecord, SendResult, StoredMessage
from store.register import RegisterStore, SessionRoute

# Keeps a push record well under Kafka's 1 MB default (user ids are <= 64 chars):
# a connector holding more members of one group gets several records.
MAX_RECIPIENTS_PER_RECORD = 5_000


def recipients_of(message: StoredMessage) -> list[str]:
    """Addressees of a 1:1 or system-to-user message (groups: see fanout.py)."""
    return [message.to] if message.to is not None else []


def is_broadcast(message: StoredMessage) -> bool:
    return message.conv_id == BROADCAST


@dataclass(frozen=True, slots=True)
class Delivery:
    """A sequenced message, who gets it, and the sender's device it came from."""

    message: StoredMessage
    recipients: Sequence[str]
    # Non-empty: the sender's other devices get a copy, this one not.
    sender_device: str = ""

    def users(self) -> list[str]:
        """Users whose routes the plan needs (the recipients, and the sender for copies)."""
        if self.sender_device:
            return [*self.recipients, self.message.sender]
        return list(self.recipients)


@dataclass(frozen=True, slots=True)
class Reply:
    """A send result and the connector waiting for it (None: nobody waits)."""

    connector_id: str | None
    result: SendResult


@dataclass
class RoutingPlan:
    """Push records per connector (in batch order) and offline list entries."""

    pushes: dict[str, list[PushRecord]] = field(default_factory=lambda: defaultdict(list))
    offline: list[tuple[str, StoredMessage]] = field(default_factory=list)


def _live(routes: Iterable[SessionRoute], alive: set[str]) -> list[str]:
    return sorted({route.connector_id for route in routes if route.connector_id in alive})


def _route(
    delivery: Delivery,
    routes: Mapping[str, Sequence[SessionRoute]],
    alive: set[str],
    result: RoutingPlan,
) -> None:
    message = delivery.message
    on_connector: dict[str, list[str]] = defaultdict(list)
    for user in delivery.recipients:
        live = _live(routes.get(user, ()), alive)
        if not live:
            result.offline.append((user, message))
        for connector_id in live:
            on_connector[connector_id].append(user)

    with_sender: set[str] = set()
    sender = message.sender
    if delivery.sender_device and sender not in delivery.recipients:
        other_devices = [r for r in routes.get(sender, ()) if r.device != delivery.sender_device]
        for connector_id in _live(other_devices, alive):
            on_connector[connector_id].append(sender)
            with_sender.add(connector_id)

    for connector_id, users in on_connector.items():
        exclude = delivery.sender_device if connector_id in with_sender else None
        for start in range(0, len(users), MAX_RECIPIENTS_PER_RECORD):
            result.pushes[connector_id].append(
                PushRecord(
                    kind="deliver",
                    recipients=users[start : start + MAX_RECIPIENTS_PER_RECORD],
                    message=message,
                    exclude_device=exclude,
                )
            )


def plan(
    deliveries: Sequence[Delivery],
    replies: Sequence[Reply],
    routes: Mapping[str, Sequence[SessionRoute]],
    alive: set[str],
    live_connectors: Sequence[str] = (),
) -> RoutingPlan:
    """Route a batch; ``routes`` per user, the ``alive`` connector ids and (for broadcasts)
    every ``live_connectors`` id come from Redis."""
    result = RoutingPlan()
    for delivery in deliveries:
        if is_broadcast(delivery.message):
            for connector_id in live_connectors:
                result.pushes[connector_id].append(
                    PushRecord(kind="broadcast", message=delivery.message)
                )
        else:
            _route(delivery, routes, alive, result)
    for reply in replies:
        if reply.connector_id is not None and reply.connector_id in alive:
            result.pushes[reply.connector_id].append(
                PushRecord(
                    kind="send_result", recipients=[reply.result.sender], result=reply.result
                )
            )
    return result


def push_key(record: PushRecord) -> str:
    """Kafka key of a push record (push topics have one partition; the key only informs)."""
    if record.recipients:
        return record.recipients[0]
    return record.message.conv_id if record.message is not None else ""


class ConnectorLiveness:
    """Which connectors are alive, remembering for ``remember_s`` those seen alive.

    A connector's liveness key outlives it by up to IM_CONNECTOR_TTL_S anyway, so
    a dead connector already looks alive that long; remembering a live answer for
    another second spares the sequencer a Redis round trip in most batches.
    Messages pushed to a dead connector's topic reach their users through sync
    after they reconnect (docs/operations.md, "Routing"). Dead answers are never
    remembered: a connector that comes back is used at once.
    """

    def __init__(
        self,
        register: RegisterStore,
        remember_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.register = register
        self.remember_s = remember_s
        self.clock = clock
        self._seen_alive: dict[str, float] = {}

    async def alive(self, connector_ids: Iterable[str]) -> set[str]:
        now = self.clock()
        wanted = set(connector_ids)
        known = {c for c in wanted if now - self._seen_alive.get(c, -math.inf) < self.remember_s}
        unknown = wanted - known
        if unknown:
            found = await self.register.alive_connectors(unknown)
            for connector_id in found:
                self._seen_alive[connector_id] = now
            known |= found
        return known


async def lookup(
    register: RegisterStore,
    users: Iterable[str],
    reply_connectors: Iterable[str],
    liveness: ConnectorLiveness | None = None,
) -> tuple[dict[str, list[SessionRoute]], set[str]]:
    """Routes of the users and which of the involved connectors are alive (pipelined).

    With ``liveness``, recent live answers are reused (see ConnectorLiveness);
    without, every connector is asked.
    """
    routes = await register.routes_many(users)
    connectors = {r.connector_id for user_routes in routes.values() for r in user_routes}
    connectors.update(reply_connectors)
    if not connectors:
        return routes, set()
    if liveness is not None:
        return routes, await liveness.alive(connectors)
    return routes, await register.alive_connectors(connectors)


async def late_logins(
    register: RegisterStore, offline: Sequence[tuple[str, StoredMessage]]
) -> dict[str, list[PushRecord]]:
    """Deliver records for recipients routed offline who have logged in since the lookup.

    Call it after the offline lists are written. A login binds its route before it
    reads the offline list, so either that read saw our write, or this second look
    sees the route: a message never waits on the list for the next login.
    """
    if not offline:
        return {}
    routes, alive = await lookup(register, {user for user, _ in offline}, ())
    pushes: dict[str, list[PushRecord]] = defaultdict(list)
    for user, message in offline:
        for connector_id in _live(routes.get(user, ()), alive):
            pushes[connector_id].append(
                PushRecord(kind="deliver", recipients=[user], message=message)
            )
    return pushes
