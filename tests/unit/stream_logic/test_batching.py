"""The agents' batcher: batches of what arrived meanwhile, bounded, current events only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from stream_logic.batching import event_batches

END = object()


@dataclass
class FakeApp:
    """The two things the batcher reads of a Faust app."""

    active: bool = True
    consumer_generation_id: int = 1
    flow_control: Any = None

    def __post_init__(self) -> None:
        self.flow_control = SimpleNamespace(is_active=lambda: self.active)


@dataclass
class FakeStream:
    """A stream whose events are put by the test; ``noack()`` returns itself."""

    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Any]:
        while True:
            item = await self.queue.get()
            if item is END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def put(self, offset: int, generation: int = 1) -> None:
        self.queue.put_nowait(
            SimpleNamespace(offset=offset, message=SimpleNamespace(generation_id=generation))
        )


def offsets(batch: list[Any]) -> list[int]:
    return [event.offset for event in batch]


async def test_a_batch_holds_what_arrived_while_the_previous_one_ran() -> None:
    app, stream = FakeApp(), FakeStream()
    stream.put(0)
    batches = event_batches(app, stream, max_size=100)
    first = await anext(batches)
    # The previous batch is being processed: these arrive meanwhile.
    for offset in range(1, 6):
        stream.put(offset)
    await asyncio.sleep(0.01)
    second = await anext(batches)
    assert offsets(first) == [0]
    assert offsets(second) == [1, 2, 3, 4, 5]
    await batches.aclose()


async def test_batches_never_exceed_the_maximum_and_keep_order() -> None:
    app, stream = FakeApp(), FakeStream()
    for offset in range(25):
        stream.put(offset)
    stream.queue.put_nowait(END)
    seen = [offsets(batch) async for batch in event_batches(app, stream, max_size=10)]
    assert all(len(batch) <= 10 for batch in seen)
    assert [offset for batch in seen for offset in batch] == list(range(25))


async def test_events_of_an_earlier_generation_or_during_a_rebalance_are_dropped() -> None:
    app, stream = FakeApp(consumer_generation_id=2), FakeStream()
    stream.put(0, generation=1)
    stream.put(1, generation=2)
    batches = event_batches(app, stream, max_size=100)
    assert offsets(await anext(batches)) == [1]
    app.active = False
    stream.put(2, generation=2)
    app_resumed = asyncio.get_running_loop().call_later(0.05, setattr, app, "active", True)
    stream.put(3, generation=2)
    await asyncio.sleep(0.01)
    nxt = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.1)
    stream.put(4, generation=2)
    # 2 and 3 were taken while flow control was suspended: dropped, not processed.
    assert offsets(await asyncio.wait_for(nxt, 1)) == [4]
    app_resumed.cancel()
    await batches.aclose()


async def test_on_idle_runs_once_the_buffer_stays_empty_after_a_batch() -> None:
    app, stream = FakeApp(), FakeStream()
    idle_calls = 0

    async def on_idle() -> None:
        nonlocal idle_calls
        idle_calls += 1

    batches = event_batches(app, stream, max_size=10, on_idle=on_idle, idle_after_s=0.05)
    stream.put(0)
    await anext(batches)
    # The next event comes within idle_after_s: the batch before needs no idle call.
    asyncio.get_running_loop().call_later(0.01, stream.put, 1)
    assert offsets(await anext(batches)) == [1]
    assert idle_calls == 0
    # Nothing comes for longer: one idle call, not one per wait.
    asyncio.get_running_loop().call_later(0.2, stream.put, 2)
    assert offsets(await anext(batches)) == [2]
    assert idle_calls == 1
    await batches.aclose()


async def test_a_failing_stream_fails_the_batches() -> None:
    app, stream = FakeApp(), FakeStream()
    stream.queue.put_nowait(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError, match="broker gone"):
        await anext(event_batches(app, stream, max_size=10))
