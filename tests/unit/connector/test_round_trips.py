"""The coalescer that lets concurrent sessions share Redis round trips (no services needed)."""

from __future__ import annotations

import asyncio

import pytest

from connector.round_trips import Coalescer


class Recorder:
    """A ``run_many`` that records each run and holds it until released."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []
        self.release = asyncio.Event()

    async def run_many(self, items: list[int]) -> list[int | Exception]:
        self.runs.append(items)
        await self.release.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_calls_arriving_during_a_run_share_the_next_one() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.run_many, "test")
    first = asyncio.create_task(coalescer(0))
    await asyncio.sleep(0)  # the first run starts with the first call alone
    later = [asyncio.create_task(coalescer(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 0
    assert [await task for task in later] == [20, 40, 60]
    assert recorder.runs == [[0], [2, 4, 6]]


async def test_an_item_s_error_reaches_its_caller_alone() -> None:
    recorder = Recorder()
    recorder.release.set()
    coalescer: Coalescer[int, int] = Coalescer(recorder.run_many, "test")
    good, bad = coalescer(2), coalescer(3)
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert results[0] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 3"
    assert recorder.runs == [[2, 3]]


async def test_a_failed_run_fails_each_of_its_callers_and_the_next_run_still_happens() -> None:
    runs: list[list[str]] = []

    async def run_many(items: list[str]) -> list[str]:
        runs.append(items)
        if len(runs) == 1:
            raise ConnectionError("redis gone")
        return [item.upper() for item in items]

    coalescer: Coalescer[str, str] = Coalescer(run_many, "test")
    results = await asyncio.gather(coalescer("a"), coalescer("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await coalescer("c") == "C"
    assert runs == [["a", "b"], ["c"]]


async def test_a_cancelled_caller_does_not_break_the_others() -> None:
    recorder = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(recorder.run_many, "test")
    gone = asyncio.create_task(coalescer(2))
    kept = asyncio.create_task(coalescer(4))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.release.set()
    assert await kept == 40
    with pytest.raises(asyncio.CancelledError):
        await gone
