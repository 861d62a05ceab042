"""Counting the broker's request log lines (bench/requests.py)."""

from __future__ import annotations

from bench.requests import count

LINE = (
    '[2026-11-26 23:10:40,353] DEBUG Completed request:{"isForwarded":false,'
    '"requestHeader":{"requestApiKey":%d,"requestApiVersion":11,"correlationId":4,'
    '"clientId":"%s","requestApiKeyName":"X"},"request":""} (kafka.request.logger)'
)


def test_requests_are_counted_by_api_and_component() -> None:
    lines = [
        LINE % (0, "mmim-connector-c1"),
        LINE % (0, "mmim-connector-c2"),
        LINE % (8, "mmim-connector-c1"),
        LINE % (0, "mmim-logic-outputs"),
        LINE % (1, "faust-0.15.3"),
        "[2026-11-26 23:10:41,000] WARN something else (kafka.server)",
    ]
    counts = count(lines)
    assert counts["by_api"] == {"Produce": 3, "OffsetCommit": 1, "Fetch": 1}
    assert counts["by_client"]["connector Produce"] == 2
    assert counts["by_client"]["logic outputs Produce"] == 1
    assert counts["by_client"]["logic (faust) faust Fetch"] == 1
