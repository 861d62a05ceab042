"""Reconnect delays: exponential backoff with jitter, parameters from the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Beyond this many doublings every delay is the cap anyway; avoids float overflow.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class Backoff:
    """``delay = min(max, initial * multiplier**attempt)``, spread by ``±jitter``.

    ``jitter`` is a fraction (0..1): with 0.2 a 1 s delay becomes 0.8..1.2 s,
    so clients that lost the same connector do not all come back at once.
    """

    initial_ms: float = 500.0
    max_ms: float = 30_000.0
    multiplier: float = 2.0
    jitter: float = 0.2

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Backoff:
        """Parse the dispatcher's ``backoff`` object; missing or bad fields keep defaults."""
        default = cls()
        if not isinstance(data, dict):
            return default

        def number(key: str, fallback: float, low: float, high: float) -> float:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return fallback
            return min(max(float(value), low), high)

        initial = number("initial_ms", default.initial_ms, 1.0, 3_600_000.0)
        return cls(
            initial_ms=initial,
            max_ms=number("max_ms", default.max_ms, initial, 3_600_000.0),
            multiplier=number("multiplier", default.multiplier, 1.0, 100.0),
            jitter=number("jitter", default.jitter, 0.0, 1.0),
        )

    def base_ms(self, attempt: int) -> float:
        """The delay before jitter for the ``attempt``-th retry (0-based)."""
        exponent = min(max(attempt, 0), _MAX_EXPONENT)
        return min(self.max_ms, self.initial_ms * self.multiplier**exponent)

    def delay_s(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry ``attempt``; ``rand`` is uniform in [0, 1)."""
        base = self.base_ms(attempt)
        spread = base * self.jitter * (2.0 * rand - 1.0)
        return max(0.0, min(self.max_ms, base + spread)) / 1000.0
