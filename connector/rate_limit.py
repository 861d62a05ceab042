"""A token bucket per connection: ``rate`` requests a second, bursts up to ``burst``."""

from __future__ import annotations

import time


class TokenBucket:
    """Classic token bucket; ``allow()`` spends one token or says no."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, burst: int, *, now: float | None = None) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = time.monotonic() if now is None else now

    def allow(self, now: float | None = None) -> bool:
        """Take one token if there is one; refill first by the time elapsed."""
        now = time.monotonic() if now is None else now
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
