"""Reconnect delays: grow exponentially to a cap, spread by jitter, never negative."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from client.backoff import Backoff


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(initial_ms=500, max_ms=4000, multiplier=2, jitter=0)
    assert [backoff.delay_s(n, 0.5) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_spreads_the_delay_both_ways() -> None:
    backoff = Backoff(initial_ms=1000, max_ms=30_000, multiplier=2, jitter=0.2)
    assert backoff.delay_s(0, 0.0) == 0.8
    assert backoff.delay_s(0, 0.5) == 1.0
    assert 1.19 < backoff.delay_s(0, 0.999999) <= 1.2


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
    initial=st.floats(min_value=1, max_value=10_000),
    extra=st.floats(min_value=0, max_value=100_000),
    multiplier=st.floats(min_value=1, max_value=10),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_every_delay_is_within_the_cap_and_the_jitter_band(
    attempt: int, rand: float, initial: float, extra: float, multiplier: float, jitter: float
) -> None:
    backoff = Backoff(initial, initial + extra, multiplier, jitter)
    delay_ms = backoff.delay_s(attempt, rand) * 1000
    base = backoff.base_ms(attempt)
    assert 0 <= delay_ms <= backoff.max_ms + 1e-6
    assert base * (1 - jitter) - 1e-6 <= delay_ms <= base * (1 + jitter) + 1e-6


def test_the_dispatchers_parameters_are_used_and_bad_ones_ignored() -> None:
    parsed = Backoff.from_json({"initial_ms": 100, "max_ms": 900, "multiplier": 3, "jitter": 0.5})
    assert parsed == Backoff(100, 900, 3, 0.5)
    assert Backoff.from_json(None) == Backoff()
    odd = Backoff.from_json({"initial_ms": "soon", "max_ms": 1, "multiplier": 0.1, "jitter": 7})
    assert odd.initial_ms == Backoff().initial_ms
    assert odd.max_ms >= odd.initial_ms and odd.multiplier == 1 and odd.jitter == 1
