"""Handing fetched records to the streams without four asyncio tasks per record.

Faust's consumer hands every fetched record to its stream through
``await self.wait_first(callback(message), self.suspend_flow.wait())``: the
hand-over may wait (a full stream buffer, a paused flow, a full producer
buffer) and a rebalance must be able to interrupt that wait. ``wait_first``
wraps the hand-over and three interrupt waits in four tasks and an
``asyncio.wait``: ~20 us per record, two records per message (``im.msg`` and
``im.persist``). Yet almost every hand-over finishes without waiting.

:func:`start_eagerly` runs a coroutine up to its first wait in the caller's
task (what Python 3.12 calls an eager task). Only a hand-over that has to wait
goes through ``wait_first``, with the same interrupts and the same outcome as
before. :class:`TasklessDrain` is Faust's drain loop (faust-streaming 0.15.3,
``faust.transport.consumer.Consumer._drain_messages``) with that one change.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING, Consumer


class _Resumed:
    """The rest of a coroutine that already ran up to ``waiting_on``, as an awaitable."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as error:  # thrown in by the task: cancellation
                try:
                    waiting_on = coro.throw(error)
                except StopIteration as finished:
                    return finished.value
                continue
            try:
                waiting_on = coro.send(sent)
            except StopIteration as finished:
                return finished.value


def start_eagerly(coro: Coroutine[Any, Any, Any]) -> _Resumed | None:
    """Run ``coro`` until it finishes (None) or waits (the awaitable rest of it).

    An error it raises before waiting propagates here, as awaiting it would.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return _Resumed(coro, waiting_on)


class TasklessDrain(Consumer):
    """Faust's drain loop, where a hand-over that does not wait costs no task."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        # This is Faust's loop; only the hand-over (marked below) differs.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # The one change: Faust awaits wait_first here for every record.
                            rest = start_eagerly(cast(Coroutine[Any, Any, None], callback(message)))
                            if rest is not None:
                                await self.wait_first(rest, self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
