"""Bench results: percentiles, the JSON files and the PNG chart."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return round(ordered[rank], 2)


def latency_summary(values: list[float]) -> dict[str, float | None]:
    """p50, p95, p99 and max of ``values`` (ms), None when empty."""
    return {
        "p50_ms": percentile(values, 0.50),
        "p95_ms": percentile(values, 0.95),
        "p99_ms": percentile(values, 0.99),
        "max_ms": round(max(values), 2) if values else None,
    }


# Every key the issue asks latest.json to hold (dotted paths).
REQUIRED_KEYS = (
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
)


def missing_keys(results: dict[str, Any]) -> list[str]:
    """The required dotted keys that ``results`` lacks."""
    missing = []
    for dotted in REQUIRED_KEYS:
        node: Any = results
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    return missing


def ratio(pipeline_msgs_s: float, raw_msgs_s: float) -> float:
    """Pipeline rate over the raw relay's (0 when the relay measured nothing)."""
    return round(pipeline_msgs_s / raw_msgs_s, 3) if raw_msgs_s else 0.0


def machine() -> dict[str, Any]:
    memory_kib = 0
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_gib": round(memory_kib / 1024 / 1024, 1), "cpu": cpu}


def write_results(results: dict[str, Any], charts: dict[str, Any]) -> Path:
    """Write ``bench/results/<timestamp>.json``, ``latest.json`` and a PNG; return the JSON path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = RESULTS_DIR / f"{stamp}.json"
    text = json.dumps(results, indent=2, sort_keys=True) + "\n"
    path.write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    png = RESULTS_DIR / f"{stamp}.png"
    draw_chart(charts, png)
    (RESULTS_DIR / "latest.png").write_bytes(png.read_bytes())
    return path


def draw_chart(charts: dict[str, Any], path: Path) -> None:
    """Latency distribution (CDF) and delivered msgs/s over time of the 1:1 run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cdf, timeline) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, values in charts.get("latencies", {}).items():
        if not values:
            continue
        ordered = sorted(values)
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        cdf.plot(ordered, fractions, label=label)
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("fraction of messages")
    cdf.set_title("Latency distribution")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8)
    for label, series in charts.get("timelines", {}).items():
        seconds = sorted(series)
        timeline.plot(seconds, [series[s] for s in seconds], label=label)
    timeline.set_xlabel("second of the run")
    timeline.set_ylabel("messages delivered per second")
    timeline.set_title("Throughput over time")
    timeline.grid(True, alpha=0.3)
    timeline.legend(fontsize=8)
    figure.suptitle(charts.get("title", "MM-IM bench"))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
