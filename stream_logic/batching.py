"""Batches of events for the agents: whatever arrived while the previous batch ran.

Faust's ``noack_take`` stops pulling events while a batch is processed and then
waits up to ``within`` seconds for the next one to fill, moving events one by
one in that window. Under load its batches stay small (they hold what can be
moved in ``within``) and at low load every message waits out the window.

Here a reader task keeps moving events into a bounded buffer while a batch is
processed, and the next batch is everything buffered, handed over at once; only
an empty buffer waits, and only for the first event. Under load batches grow by
themselves (fewer fixed costs per message); at low load a message waits for
nothing but the batch ahead of it.

Events are not acked here: the agent acks a batch once its effects are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


def is_current(app: Any, event: Any) -> bool:
    """Whether an event may still be processed: Faust's own rule for its iterators.

    An event read before a rebalance began (other consumer generation) or while
    one is under way (flow control suspended) is dropped unacked, as Faust drops
    its queued events then; it is read again from the committed offset by
    whichever worker owns its partition afterwards.
    """
    return bool(
        app.flow_control.is_active() and event.message.generation_id == app.consumer_generation_id
    )


async def event_batches(
    app: Any,
    stream: Any,
    max_size: int,
    linger_s: float = 0.0,
    on_idle: Callable[[], Awaitable[None]] | None = None,
    idle_after_s: float = 0.0,
) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_size`` current events of ``stream``, in arrival order.

    ``linger_s``: after waiting on an empty buffer, how long to let more events
    gather behind the first (fewer, larger batches at moderate load; under load
    the buffer is never empty and nothing lingers). ``on_idle`` is awaited once
    the buffer has stayed empty for ``idle_after_s`` after a batch, and then not
    again until the next batch.
    """
    buffer: list[Any] = []
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()
    manual = stream.noack()  # acks are the agent's

    async def read() -> None:
        async for event in manual.events():
            while len(buffer) >= max_size:
                room.clear()
                await room.wait()
            buffer.append(event)
            arrived.set()

    reader = asyncio.create_task(read(), name=f"batch reader of {stream}")

    async def events_within(seconds: float | None) -> bool:
        """Wait until the buffer holds events (or the reader ended); False if ``seconds`` pass."""
        arrived.clear()
        waiting = asyncio.create_task(arrived.wait())
        try:
            done, _ = await asyncio.wait(
                {waiting, reader}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiting.cancel()
        return bool(done)

    idle_handled = on_idle is None
    try:
        while True:
            if not buffer:
                if reader.done():
                    reader.result()  # the stream's error, if it failed
                    return
                if not idle_handled:
                    if not await events_within(idle_after_s):
                        assert on_idle is not None
                        await on_idle()
                        idle_handled = True
                    continue
                await events_within(None)
                if buffer and linger_s > 0 and len(buffer) < max_size:
                    await asyncio.sleep(linger_s)
                continue
            batch = buffer[:max_size]
            del buffer[: len(batch)]
            room.set()
            current = [event for event in batch if is_current(app, event)]
            if current:
                idle_handled = on_idle is None
                yield current
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
