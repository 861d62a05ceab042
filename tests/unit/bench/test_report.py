"""The pure parts of the bench: percentiles, summaries, the keys latest.json must hold."""

from __future__ import annotations

from bench.report import (
    REQUIRED_KEYS,
    latency_summary,
    missing_keys,
    percentile,
    ratio,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_percentile_ignores_input_order() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0


def test_empty_latencies_give_none_not_zero() -> None:
    summary = latency_summary([])
    assert summary == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}


def test_summary_reports_the_worst_latency_as_max() -> None:
    summary = latency_summary([1.0, 2.0, 250.0])
    assert summary["max_ms"] == 250.0
    assert summary["p50_ms"] == 2.0


def test_ratio_guards_a_missing_relay_figure() -> None:
    assert ratio(500.0, 1000.0) == 0.5
    assert ratio(500.0, 0.0) == 0.0


def complete_results() -> dict:
    results: dict = {}
    for dotted in REQUIRED_KEYS:
        node = results
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = 1
    return results


def test_required_keys_cover_the_issue() -> None:
    for key in (
        "one_to_one.max_rate_msgs_s",
        "one_to_one.p50_ms",
        "one_to_one.p99_ms",
        "one_to_one.lost",
        "one_to_one.duplicates",
        "one_to_one.reordered",
        "at_1000.p50_ms",
        "at_1000.p99_ms",
        "idle.connections",
        "idle.bytes_per_conn",
        "login_storm.logins_s",
        "group.deliveries_s",
        "group.p99_ms",
        "raw_relay.msgs_s",
        "ratio_vs_raw",
        "quick",
        "machine",
    ):
        assert key in REQUIRED_KEYS


def test_missing_keys_names_what_is_absent() -> None:
    results = complete_results()
    assert missing_keys(results) == []
    del results["group"]["p99_ms"]
    del results["ratio_vs_raw"]
    assert missing_keys(results) == ["group.p99_ms", "ratio_vs_raw"]
