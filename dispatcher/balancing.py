"""Which connector a client should use: the least loaded live one."""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from fractions import Fraction

from store.register import ConnectorInfo


def load_of(connector: ConnectorInfo) -> Fraction:
    """Share of capacity in use; exact, so equal loads tie exactly."""
    return Fraction(connector.connections, connector.capacity)


def choose_connector(
    connectors: Iterable[ConnectorInfo],
    exclude: Collection[str] = (),
    rng: random.Random | None = None,
) -> ConnectorInfo | None:
    """The connector with the lowest connections/capacity, or None if none can take a client.

    Connectors in ``exclude`` (those a reconnecting client just failed to reach) and
    full ones are skipped. Ties are broken at random so that clients arriving together
    spread over equally loaded connectors instead of all piling onto the first.
    """
    candidates = [
        c for c in connectors if c.connector_id not in exclude and 0 <= c.connections < c.capacity
    ]
    if not candidates:
        return None
    lowest = min(load_of(c) for c in candidates)
    best = [c for c in candidates if load_of(c) == lowest]
    return (rng or random).choice(best)
