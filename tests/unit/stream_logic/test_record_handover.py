"""start_eagerly: a hand-over that does not wait runs in the caller's task;
one that waits can still be finished or interrupted."""

from __future__ import annotations

import asyncio

import pytest

from stream_logic.record_handover import start_eagerly


async def test_a_coroutine_that_does_not_wait_finishes_in_the_call() -> None:
    delivered: list[str] = []

    async def hand_over() -> None:
        delivered.append("record")

    assert start_eagerly(hand_over()) is None
    assert delivered == ["record"]


async def test_an_error_before_any_wait_propagates_from_the_call() -> None:
    async def undecodable() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        start_eagerly(undecodable())


async def test_a_coroutine_that_waits_is_finished_by_awaiting_the_rest() -> None:
    room = asyncio.Event()
    steps: list[str] = []

    async def hand_over() -> str:
        steps.append("before")
        await room.wait()
        steps.append("after")
        await asyncio.sleep(0)  # a second wait, after the resume
        return "delivered"

    rest = start_eagerly(hand_over())
    assert rest is not None
    assert steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    room.set()
    assert await task == "delivered"
    assert steps == ["before", "after"]


async def test_the_rest_can_be_cancelled_and_the_coroutine_sees_it() -> None:
    never = asyncio.Event()
    cleaned_up: list[bool] = []

    async def hand_over() -> None:
        try:
            await never.wait()
        finally:
            cleaned_up.append(True)

    rest = start_eagerly(hand_over())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up == [True]


async def test_an_error_after_a_wait_propagates_through_the_rest() -> None:
    room = asyncio.Event()

    async def hand_over() -> None:
        await room.wait()
        raise RuntimeError("buffer closed")

    rest = start_eagerly(hand_over())
    assert rest is not None
    room.set()
    with pytest.raises(RuntimeError, match="buffer closed"):
        await rest
