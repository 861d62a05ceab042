"""Generator processes: start them, show progress while they run, collect their results.

Every scenario runs its load in several spawned processes so one Python
process is never the bottleneck; this module is the only place that knows how.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queue_module
import time
from collections.abc import Callable, Coroutine
from typing import Any

PROGRESS_EVERY_S = 2.0


def _entry(
    index: int, target: Callable[..., Coroutine[Any, Any, Any]], args: tuple, out: Any
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        out.put((index, asyncio.run(target(index, *args)), None))
    except BaseException as error:  # reported to the parent instead of a silent hang
        out.put((index, None, repr(error)))


def run_processes(
    target: Callable[..., Coroutine[Any, Any, Any]],
    processes: int,
    args: tuple,
    timeout_s: float,
    label: str,
) -> list[Any]:
    """Run ``target(index, *args)`` in ``processes`` spawned processes; their results in order.

    Prints a progress line every few seconds; raises if a worker fails or the
    whole run takes longer than ``timeout_s``.
    """
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    children = [
        context.Process(target=_entry, args=(index, target, args, out), daemon=True)
        for index in range(processes)
    ]
    for child in children:
        child.start()
    results: dict[int, Any] = {}
    started = time.monotonic()
    last_progress = started
    try:
        while len(results) < processes:
            now = time.monotonic()
            if now - started > timeout_s:
                raise RuntimeError(f"{label}: workers still running after {timeout_s:.0f}s")
            if now - last_progress >= PROGRESS_EVERY_S:
                print(
                    f"  … {label}: {now - started:.0f}s, {len(results)}/{processes} workers done",
                    flush=True,
                )
                last_progress = now
            try:
                index, result, error = out.get(timeout=0.5)
            except queue_module.Empty:
                dead = [c for i, c in enumerate(children) if i not in results and not c.is_alive()]
                if dead and out.empty():
                    time.sleep(0.5)  # a result may still be in the pipe
                    if out.empty():
                        raise RuntimeError(
                            f"{label}: a worker died (exit {dead[0].exitcode})"
                        ) from None
                continue
            if error is not None:
                raise RuntimeError(f"{label}: worker {index} failed: {error}")
            results[index] = result
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
    return [results[index] for index in range(processes)]
