"""Connector choice: clients go to the least loaded live connector that has room."""

from __future__ import annotations

import random
from collections import Counter

from dispatcher.balancing import choose_connector
from store.register import ConnectorInfo


def _connector(connector_id: str, connections: int, capacity: int = 100) -> ConnectorInfo:
    return ConnectorInfo(connector_id, "127.0.0.1", 7000, connections, capacity, ts_ms=0)


def test_least_loaded_connector_is_chosen() -> None:
    connectors = [_connector("c1", 50), _connector("c2", 10), _connector("c3", 90)]
    assert choose_connector(connectors).connector_id == "c2"  # type: ignore[union-attr]


def test_load_is_relative_to_capacity() -> None:
    # 300 of 1000 (30 %) is less loaded than 5 of 10 (50 %).
    connectors = [_connector("small", 5, capacity=10), _connector("big", 300, capacity=1000)]
    assert choose_connector(connectors).connector_id == "big"  # type: ignore[union-attr]


def test_excluded_connectors_are_skipped() -> None:
    connectors = [_connector("c1", 10), _connector("c2", 50)]
    assert choose_connector(connectors, {"c1"}).connector_id == "c2"  # type: ignore[union-attr]


def test_full_connectors_are_skipped() -> None:
    connectors = [_connector("full", 100), _connector("busy", 99)]
    assert choose_connector(connectors).connector_id == "busy"  # type: ignore[union-attr]


def test_nothing_to_choose_gives_none() -> None:
    assert choose_connector([]) is None
    assert choose_connector([_connector("full", 100)]) is None
    assert choose_connector([_connector("c1", 0)], {"c1"}) is None
    assert choose_connector([_connector("broken", 0, capacity=0)]) is None


def test_ties_are_spread_over_equally_loaded_connectors() -> None:
    connectors = [_connector("c1", 1, 10), _connector("c2", 10, 100), _connector("c3", 50)]
    rng = random.Random(7)
    picks = Counter(choose_connector(connectors, rng=rng).connector_id for _ in range(200))  # type: ignore[union-attr]
    assert set(picks) == {"c1", "c2"}
    assert min(picks.values()) > 50
