"""Kafka requests per 1:1 message, by request type and client, from the broker's request log.

``python -m bench.requests [--rate 500] [--seconds 10]`` turns the broker's
``kafka.request.logger`` to DEBUG (a dynamic broker-logger setting, through
Kafka's own ``kafka.admin.ConfigCommand``), runs the 1:1 load, turns it back
to WARN and counts the "Completed request" lines the run added to the broker's
log (``$IM_RUN_DIR/logs/kafka.log``, the local stack). The logging costs the
broker CPU, so latencies of this run mean nothing; the counts are the point.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

from bench.one_to_one import LoadSpec, run_load
from config.settings import Settings
from stack.infra import kafka_libs
from stack.services import run_dir

# Kafka's api keys (the ones an MM-IM run uses; others are counted by number).
API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    18: "ApiVersions",
    22: "InitProducerId",
}
_API_KEY = re.compile(r'"requestApiKey":(\d+)')
_CLIENT = re.compile(r'"clientId":"([^"]*)"')


def set_request_log(bootstrap: str, level: str) -> None:
    """Set the broker's request logger level (node 1 of the local stack)."""
    subprocess.run(
        [
            "java",
            "-cp",
            f"{kafka_libs()}/*",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            bootstrap,
            "--entity-type",
            "broker-loggers",
            "--entity-name",
            "1",
            "--alter",
            "--add-config",
            f"kafka.request.logger={level}",
        ],
        check=True,
        capture_output=True,
    )


def client_group(client_id: str) -> str:
    """Client ids grouped by component (connector ids and run ids vary)."""
    if client_id.startswith("mmim-connector-"):
        return "connector"
    if client_id.endswith("-outputs"):
        return "logic outputs"
    if client_id.startswith("faust") or client_id.startswith("aiokafka"):
        return f"logic (faust) {client_id.split('-')[0]}"
    return client_id or "?"


def count(lines: list[str]) -> dict[str, Counter[str]]:
    """Completed requests per api name and per (component, api name)."""
    by_api: Counter[str] = Counter()
    by_client: Counter[str] = Counter()
    for line in lines:
        if "Completed request" not in line:
            continue
        key = _API_KEY.search(line)
        client = _CLIENT.search(line)
        name = API_NAMES.get(int(key.group(1)), key.group(1)) if key else "?"
        by_api[name] += 1
        by_client[f"{client_group(client.group(1) if client else '')} {name}"] += 1
    return {"by_api": by_api, "by_client": by_client}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    settings = Settings()
    log_path = Path(run_dir()) / "logs" / "kafka.log"
    start = log_path.stat().st_size
    set_request_log(settings.kafka_bootstrap, "DEBUG")
    try:
        result = run_load(
            LoadSpec(
                rate=args.rate,
                duration_s=args.seconds,
                pairs_per_process=50,
                processes=2,
                sender_connector=("127.0.0.1", settings.connector_port),
                receiver_connector=("127.0.0.1", settings.connector_port + 1),
            )
        )
    finally:
        set_request_log(settings.kafka_bootstrap, "WARN")
    with log_path.open(errors="replace") as log:
        log.seek(start)
        counts = count(log.readlines())
    delivered = max(result.received, 1)
    print(f"{result.sent} sent, {result.received} delivered")
    print(f"all requests: {sum(counts['by_api'].values()) / delivered:.2f} per message")
    for name, n in counts["by_api"].most_common():
        print(f"  {name:16} {n:7d}  {n / delivered:.3f}/msg")
    print("by component:")
    for name, n in counts["by_client"].most_common(20):
        print(f"  {name:40} {n:7d}  {n / delivered:.3f}/msg")
    print(json.dumps({k: dict(v) for k, v in counts.items()}))


if __name__ == "__main__":
    main()
