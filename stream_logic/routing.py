"""Where each sequenced message goes (seed steps 9-12): a connector's push queue or offline.

A recipient with at least one route on a live connector gets a ``deliver`` push
record on that connector's topic (one record per message and connector, listing
its recipients there); a recipient with no route, or only routes on dead
connectors, gets the message on their offline list. Send results go to the
connector that published the send, if it is still alive (a sender whose
connector died retries after reconnecting and gets the same result again).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from schemas.records import PushRecord, SendResult, StoredMessage
from store.register import RegisterStore, SessionRoute


def recipients_of(message: StoredMessage) -> list[str]:
    """Users a message is delivered to (1:1 and system: the addressee)."""
    return [message.to] if message.to is not None else []


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


def plan(
    messages: Sequence[StoredMessage],
    replies: Sequence[Reply],
    routes: Mapping[str, Sequence[SessionRoute]],
    alive: set[str],
) -> RoutingPlan:
    """Route a batch; ``routes`` per user and the ``alive`` connector ids come from Redis."""
    result = RoutingPlan()
    for message in messages:
        on_connector: dict[str, list[str]] = defaultdict(list)
        for user in recipients_of(message):
            live = sorted({r.connector_id for r in routes.get(user, ()) if r.connector_id in alive})
            if not live:
                result.offline.append((user, message))
            for connector_id in live:
                on_connector[connector_id].append(user)
        for connector_id, users in on_connector.items():
            result.pushes[connector_id].append(
                PushRecord(kind="deliver", recipients=users, message=message)
            )
    for reply in replies:
        if reply.connector_id is not None and reply.connector_id in alive:
            result.pushes[reply.connector_id].append(
                PushRecord(
                    kind="send_result", recipients=[reply.result.sender], result=reply.result
                )
            )
    return result


async def lookup(
    register: RegisterStore, users: Iterable[str], reply_connectors: Iterable[str]
) -> tuple[dict[str, list[SessionRoute]], set[str]]:
    """Routes of the users and which of the involved connectors are alive (pipelined)."""
    routes = await register.routes_many(users)
    connectors = {r.connector_id for user_routes in routes.values() for r in user_routes}
    connectors.update(reply_connectors)
    alive = await register.alive_connectors(connectors) if connectors else set()
    return routes, alive
