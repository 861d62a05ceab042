"""``python -m bench [--quick]`` (``make bench``): MM-IM measured on the running stack.

Scenarios, all through the wire protocol against the stack ``make up`` started:
1:1 at a fixed rate and a ramp to the highest rate meeting p99 <= 100 ms,
idle connections, a login storm, group fan-out, and the raw aiokafka relay
that bounds what any Kafka pipeline can do here. Prints progress, writes
``bench/results/<timestamp>.json``, ``latest.json`` and a PNG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.cpu import ComponentCpu
from bench.group_fanout import GroupSpec, run_group
from bench.idle_rss import measure
from bench.login_storm import run_login_storm
from bench.one_to_one import LoadSpec, WorkerResult, run_load
from bench.raw_relay import run_relay
from bench.report import latency_summary, machine, missing_keys, ratio, write_results
from config.settings import Settings
from stack.services import run_dir

P99_GOAL_MS = 100.0
MESSAGE_BYTES = 300  # about the size of a 1:1 record on the msg topic
# The full run's 1:1 ramp: finer where the stack now saturates (1,500-2,000
# msgs/s), so the figure is not rounded down to the step below.
RAMP_RATES = (250, 500, 750, 1000, 1250, *range(1500, 2001, 100), 2250, 2500, 3000, 4000, 5000)
# The group's size, and the group messages/s the full run offers it (each one
# is delivered to every member but its sender). Steps of 15: with steps of 30
# the figure jumped between ~63,000 and ~77,000 deliveries/s from run to run,
# as the 160 step landed just above or below the 95% mark.
GROUP_MEMBERS = 500
GROUP_RATES = (100, 115, 130, 145, 160, 175, 200)


def _kept_up(group_step: dict[str, Any]) -> bool:
    """Whether a group step delivered everything, at >= 95% of the offered deliveries/s."""
    offered = group_step["offered_msgs_s"] * (group_step["members"] - 1)
    return not group_step["lost"] and group_step["deliveries_s"] >= 0.95 * offered


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def summarize(result: WorkerResult, seconds: float) -> dict[str, Any]:
    receive = latency_summary(result.receive_latency_ms)
    ack = latency_summary(result.ack_latency_ms)
    # Lost: never delivered, even after the settle wait. Backlog: delivered, but
    # only after the drain window (a queue had built); its latencies are included.
    lost = result.sent - result.received
    return {
        "sent": result.sent,
        "acked": result.acked,
        "received": result.received,
        "delivered_msgs_s": round((result.received - result.late) / seconds, 1),
        "backlog": result.late,
        "lost": lost,
        "duplicates": result.duplicates,
        "reordered": result.reordered,
        "errors": result.errors,
        "p50_ms": receive["p50_ms"],
        "p95_ms": receive["p95_ms"],
        "p99_ms": receive["p99_ms"],
        "max_ms": receive["max_ms"],
        "ack_p50_ms": ack["p50_ms"],
        "ack_p95_ms": ack["p95_ms"],
        "ack_p99_ms": ack["p99_ms"],
        "ack_max_ms": ack["max_ms"],
    }


def one_to_one_at(
    settings: Settings, rate: float, seconds: float, cpu: ComponentCpu, quick: bool
) -> tuple[dict[str, Any], WorkerResult]:
    spec = LoadSpec(
        rate=rate,
        duration_s=seconds,
        pairs_per_process=50,
        processes=2,
        sender_connector=("127.0.0.1", settings.connector_port),
        receiver_connector=("127.0.0.1", settings.connector_port + 1),
        settle_s=20.0 if quick else 60.0,
    )
    cpu.start()
    result = run_load(spec)
    summary = summarize(result, seconds)
    summary["offered_msgs_s"] = rate
    summary["cpu_percent"] = cpu.stop()
    say(
        f"1:1 at {rate:.0f}/s: delivered {summary['delivered_msgs_s']}/s, "
        f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
        f"backlog {summary['backlog']}, lost {summary['lost']}, "
        f"dup {summary['duplicates']}, reordered {summary['reordered']}"
    )
    return summary, result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run under 3 minutes")
    args = parser.parse_args()
    quick = args.quick
    settings = Settings()
    cpu = ComponentCpu.from_run_dir(run_dir())
    results: dict[str, Any] = {"quick": quick, "machine": machine(), "started": time.time()}
    charts: dict[str, Any] = {"latencies": {}, "timelines": {}, "title": "MM-IM bench"}

    # Not recorded: the first messages pay for connections, metadata and caches,
    # and on a freshly started stack Kafka's JVM is still compiling its hot paths
    # (a fresh stack measured the relay at ~21k msgs/s against 35-40k warm, and
    # failed the 1,000/s step it passes warm). So everything warms up first.
    say("1:1 warm-up at 200 then 750 msgs/s (not recorded)")
    one_to_one_at(settings, 200, 3, cpu, quick)
    if not quick:
        one_to_one_at(settings, 750, 10, cpu, quick)

    say("raw aiokafka relay (produce, consume, produce, consume; one process per stage)")
    relay = run_relay(settings.kafka_bootstrap, 20_000 if quick else 100_000, MESSAGE_BYTES)
    results["raw_relay"] = {"msgs_s": round(relay.msgs_per_s, 1), "messages": relay.messages}
    say(f"raw relay: {relay.msgs_per_s:.0f} msgs/s")

    say("1:1 ramp: the highest offered rate still meeting p99 <= 100 ms")
    rates = (250, 500, 1000) if quick else RAMP_RATES
    best: dict[str, Any] | None = None
    ramp = []
    for rate in rates:
        summary, raw = one_to_one_at(settings, rate, 5 if quick else 10, cpu, quick)
        ramp.append(summary)
        ok = (
            summary["p99_ms"] is not None
            and summary["p99_ms"] <= P99_GOAL_MS
            and summary["lost"] == 0
            and summary["backlog"] == 0
        )
        if not ok:
            break
        best = summary
        charts["timelines"][f"offered {rate}/s"] = raw.timeline
        charts["latencies"][f"send-to-receive @{rate}/s"] = raw.receive_latency_ms
    # After the ramp: its steps stop before a queue builds, while 1,000/s may build
    # one; each step also waits for its own backlog (LoadSpec.settle_s).
    say("1:1 at a fixed 1,000 msgs/s")
    at_1000, raw_1000 = one_to_one_at(settings, 1000, 5 if quick else 20, cpu, quick)
    results["at_1000"] = at_1000
    charts["latencies"]["send-to-receive @1000/s"] = raw_1000.receive_latency_ms
    charts["latencies"]["send-to-ack @1000/s"] = raw_1000.ack_latency_ms
    charts["timelines"]["offered 1000/s"] = raw_1000.timeline

    chosen = best or ramp[0]
    results["one_to_one"] = {
        "max_rate_msgs_s": best["delivered_msgs_s"] if best else 0,
        "p50_ms": chosen["p50_ms"],
        "p99_ms": chosen["p99_ms"],
        "lost": sum(step["lost"] for step in [at_1000, *ramp]),
        "backlog": sum(step["backlog"] for step in [at_1000, *ramp]),
        "duplicates": sum(step["duplicates"] for step in [at_1000, *ramp]),
        "reordered": sum(step["reordered"] for step in [at_1000, *ramp]),
        "ramp": ramp,
    }

    say("login storm through one connector")
    storm = run_login_storm(
        "127.0.0.1", settings.connector_port, 2_000 if quick else 10_000, processes=4
    )
    results["login_storm"] = storm
    say(
        f"login storm: {storm['logins_s']} logins/s ({storm['logins']} logins, "
        f"{storm['failures']} failed)"
    )

    say(f"group fan-out: one group of {GROUP_MEMBERS} members over two connectors")
    # A fixed offered rate would cap the figure at that rate: step up until the
    # stack no longer keeps up.
    steps = []
    for rate in (20,) if quick else GROUP_RATES:
        step = run_group(
            GroupSpec(
                members=GROUP_MEMBERS,
                rate=rate,
                duration_s=5 if quick else 15,
                processes=4,
                connectors=(
                    ("127.0.0.1", settings.connector_port),
                    ("127.0.0.1", settings.connector_port + 1),
                ),
            )
        )
        summary = step["summary"]
        steps.append(step)
        say(
            f"group at {rate} msgs/s ({rate * (GROUP_MEMBERS - 1):,} deliveries/s offered): "
            f"{summary['deliveries_s']} deliveries/s, p50 {summary['p50_ms']} ms, "
            f"p99 {summary['p99_ms']} ms, lost {summary['lost']}, dup {summary['duplicates']}"
        )
        if not _kept_up(summary):
            break
    # The figure: the best step that kept up (the first step if none did).
    group = max(
        [step for step in steps if _kept_up(step["summary"])] or steps[:1],
        key=lambda step: step["summary"]["deliveries_s"],
    )
    results["group"] = {
        **group["summary"],
        "steps": [step["summary"] for step in steps],
        # Every step's losses and duplicates count, not only the best one's.
        "lost": sum(step["summary"]["lost"] for step in steps),
        "duplicates": sum(step["summary"]["duplicates"] for step in steps),
    }
    charts["latencies"]["group send-to-receive"] = group["latencies"]
    charts["timelines"]["group deliveries"] = group["timeline"]
    summary = results["group"]
    say(
        f"group: {summary['deliveries_s']} deliveries/s at {summary['offered_msgs_s']} msgs/s, "
        f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
        f"lost {summary['lost']}, dup {summary['duplicates']}"
    )

    say("idle connections on one (fresh) connector")
    # 19,000: this machine's hard open-files limit is 20,000 per process, and the
    # connector needs a few descriptors beyond its clients.
    idle = asyncio.run(measure(2_000 if quick else 19_000, 3.0))
    results["idle"] = {
        "connections": idle["connections"],
        "bytes_per_conn": idle["bytes_per_conn"],
        "rss_before_mib": idle["rss_before_mib"],
        "rss_after_mib": idle["rss_after_mib"],
    }
    say(f"idle: {idle['connections']} connections, {idle['bytes_per_conn']} B each")

    results["ratio_vs_raw"] = ratio(
        results["one_to_one"]["max_rate_msgs_s"], results["raw_relay"]["msgs_s"]
    )
    missing = missing_keys(results)
    if missing:
        say(f"warning: results lack {', '.join(missing)}")
    path = write_results(results, charts)
    say(f"results written to {path} and bench/results/latest.json")
    say(
        f"1:1 max {results['one_to_one']['max_rate_msgs_s']} msgs/s, "
        f"at 1000/s p99 {at_1000['p99_ms']} ms, raw relay {results['raw_relay']['msgs_s']} "
        f"msgs/s, ratio {results['ratio_vs_raw']}"
    )


if __name__ == "__main__":
    main()
