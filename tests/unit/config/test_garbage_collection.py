"""freeze_startup_heap: what exists at the call leaves the collector's walks."""

from __future__ import annotations

import gc

from config.garbage_collection import freeze_startup_heap


def test_objects_alive_at_the_call_are_frozen_and_later_ones_are_not() -> None:
    before = [object() for _ in range(10)]
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen > len(before)
        assert not any(obj is before for obj in gc.get_objects())  # frozen: no longer tracked
        after = [[] for _ in range(10)]
        assert any(obj is after for obj in gc.get_objects())  # made later: still collected
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0
