"""The group ramp's rule: a step counts only if it delivered everything, near the offered rate."""

from __future__ import annotations

from typing import Any

from bench.__main__ import _kept_up


def step(rate: float, deliveries_s: float, lost: int = 0) -> dict[str, Any]:
    return {"offered_msgs_s": rate, "members": 500, "deliveries_s": deliveries_s, "lost": lost}


def test_a_step_delivering_at_least_95_percent_of_the_offered_rate_kept_up() -> None:
    assert _kept_up(step(100, 48_720.5))  # 49,900 offered
    assert _kept_up(step(100, 0.95 * 49_900))


def test_a_step_falling_behind_or_losing_messages_did_not() -> None:
    assert not _kept_up(step(160, 75_216.2))  # 79,840 offered: 94.2%
    assert not _kept_up(step(100, 49_900, lost=1))
