"""1:1 load, open loop: senders on one connector, receivers on another, a fixed offered rate.

Open loop means each message has a scheduled send time and latency is measured
from that time, so a slow server cannot hide latency by slowing the senders
down. Several generator processes share the rate so the generator is not the
bottleneck.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from bench.wire import WireSession
from bench.workers import run_processes


@dataclass(frozen=True)
class LoadSpec:
    rate: float  # offered msgs/s, all processes together
    duration_s: float
    pairs_per_process: int
    processes: int
    sender_connector: tuple[str, int]
    receiver_connector: tuple[str, int]
    # After the run, the window in which messages still count as delivered in time.
    drain_s: float = 10.0
    # Then up to this much longer for what is still queued: counted as backlog (it
    # was delivered, late), not as lost. Lost means never delivered at all. Waiting
    # for it also keeps one step's backlog out of the next step's latencies.
    settle_s: float = 60.0


@dataclass
class WorkerResult:
    sent: int = 0
    acked: int = 0
    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    errors: int = 0
    # Received after the drain window (still queued when it ended).
    late: int = 0
    ack_latency_ms: list[float] = field(default_factory=list)
    receive_latency_ms: list[float] = field(default_factory=list)
    # (second since start, deliveries in that second)
    timeline: dict[int, int] = field(default_factory=dict)


def mint_tokens(users: list[str]) -> dict[str, str]:
    """Tokens signed with the stack's secret: no argon2 registration per bench user."""
    from auth.tokens import TokenService
    from config.settings import Settings

    service = TokenService(Settings(), None)
    return {user: service.issue(user).token for user in users}


async def _worker(index: int, spec: LoadSpec, run_id: str) -> WorkerResult:
    result = WorkerResult()
    pairs = [
        (f"b{run_id}-{index}-{pair}-s", f"b{run_id}-{index}-{pair}-r")
        for pair in range(spec.pairs_per_process)
    ]
    tokens = mint_tokens([user for pair in pairs for user in pair])
    # Several loopback source addresses: many connections without exhausting one's ports.
    source = f"127.0.0.{2 + index % 200}"
    senders, receivers = [], []
    seen: set[str] = set()
    last_seq: dict[str, int] = {}
    started_ns = time.time_ns()

    def on_push(body: dict[str, Any], now_ns: int) -> None:
        msg_id = body["msg_id"]
        if msg_id in seen:
            result.duplicates += 1
            return
        seen.add(msg_id)
        result.received += 1
        conv, seq = body["conv_id"], int(body["seq"])
        if seq <= last_seq.get(conv, 0):
            result.reordered += 1
        last_seq[conv] = max(seq, last_seq.get(conv, 0))
        scheduled_ns = int(body["client_msg_id"].rsplit(":", 1)[1])
        result.receive_latency_ms.append((now_ns - scheduled_ns) / 1e6)
        second = int((now_ns - started_ns) / 1e9)
        result.timeline[second] = result.timeline.get(second, 0) + 1

    def on_ack(body: dict[str, Any], now_ns: int) -> None:
        result.acked += 1
        scheduled_ns = int(body["client_msg_id"].rsplit(":", 1)[1])
        result.ack_latency_ms.append((now_ns - scheduled_ns) / 1e6)

    for sender_id, receiver_id in pairs:
        receiver = WireSession(*spec.receiver_connector, source_host=source)
        await receiver.connect()
        await receiver.login(tokens[receiver_id])
        receiver.on_push = on_push
        receiver.start_reading()
        receivers.append(receiver)
        sender = WireSession(*spec.sender_connector, source_host=source)
        await sender.connect()
        await sender.login(tokens[sender_id])
        sender.on_ack = on_ack
        sender.start_reading()
        senders.append(sender)

    per_process_rate = spec.rate / spec.processes
    total = int(per_process_rate * spec.duration_s)
    interval_ns = int(1e9 / per_process_rate)
    started_ns = time.time_ns()
    for n in range(total):
        scheduled_ns = started_ns + n * interval_ns
        delay = (scheduled_ns - time.time_ns()) / 1e9
        if delay > 0.0005:
            await asyncio.sleep(delay)
        pair = n % len(pairs)
        senders[pair].send(pairs[pair][1], "x" * 64, f"{n}:{scheduled_ns}")
        result.sent += 1
        if n % 1000 == 0:
            for session in senders + receivers:
                session.heartbeat()
    deadline = time.monotonic() + spec.drain_s
    # Poll: the counters are bumped by socket callbacks, the wait is bounded.
    while time.monotonic() < deadline and (  # noqa: ASYNC110
        result.received < result.sent or result.acked < result.sent
    ):
        await asyncio.sleep(0.05)
    in_window = result.received
    deadline = time.monotonic() + spec.settle_s
    while time.monotonic() < deadline and (  # noqa: ASYNC110
        result.received < result.sent or result.acked < result.sent
    ):
        await asyncio.sleep(0.05)
    result.late = result.received - in_window
    result.errors = sum(len(s.errors) for s in senders + receivers)
    for session in senders + receivers:
        await session.close()
    return result


def run_load(spec: LoadSpec) -> WorkerResult:
    """Run the load in ``spec.processes`` processes and merge their results."""
    run_id = secrets.token_hex(3)
    parts = run_processes(
        _worker,
        spec.processes,
        (spec, run_id),
        timeout_s=spec.duration_s + spec.drain_s + spec.settle_s + 120,
        label=f"1:1 at {spec.rate:.0f}/s",
    )
    merged = WorkerResult()
    for part in parts:
        for name in ("sent", "acked", "received", "duplicates", "reordered", "errors", "late"):
            setattr(merged, name, getattr(merged, name) + getattr(part, name))
        merged.ack_latency_ms.extend(part.ack_latency_ms)
        merged.receive_latency_ms.extend(part.receive_latency_ms)
        for second, count in part.timeline.items():
            merged.timeline[second] = merged.timeline.get(second, 0) + count
    return merged
