"""Retry a batch step until it succeeds: the logic never drops a batch it could not finish.

Faust acks a record whose agent raised, so a failing step must not raise out of
the agent: it is retried here, with capped exponential backoff, while its input
offsets stay uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

INITIAL_DELAY_S = 0.1
MAX_DELAY_S = 5.0


async def until_done(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Await ``step()`` until it returns; log each failure with ``what`` it was doing."""
    delay = INITIAL_DELAY_S
    attempt = 1
    while True:
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # Redis/Kafka/MySQL down: wait and retry
            log.warning(
                "%s failed (attempt %d): %r; retrying in %.1fs", what, attempt, error, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            attempt += 1
