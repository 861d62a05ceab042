"""Group fan-out: one group of 500 members spread over two connectors, open-loop sends.

The group is created directly in MySQL (store.groups.GroupStore) and the members'
tokens are minted with the stack's secret, as in bench/one_to_one.py, so the
measurement starts with every member logged in. Each generator process holds
its share of the members (alternating between the two connectors) and one of
them sends at its share of the offered rate; every other member must receive
every message exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from bench.one_to_one import mint_tokens
from bench.wire import WireSession
from bench.workers import run_processes


@dataclass(frozen=True)
class GroupSpec:
    members: int
    rate: float  # offered group messages/s, all senders together
    duration_s: float
    processes: int
    connectors: tuple[tuple[str, int], ...]
    drain_s: float = 15.0


@dataclass
class GroupResult:
    sent: int = 0
    received: int = 0
    duplicates: int = 0
    reordered: int = 0
    errors: int = 0
    first_send: float = 0.0
    last_receive: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    timeline: dict[int, int] = field(default_factory=dict)


async def create_group(members: list[str]) -> str:
    """A group holding ``members`` (the first is its owner), written straight to MySQL."""
    from redis.asyncio import Redis

    from config.settings import Settings
    from store.groups import GroupStore
    from store.mysql import close_pool, create_pool

    settings = Settings()
    pool = await create_pool(settings, maxsize=2)
    redis = Redis.from_url(settings.redis_url)
    try:
        store = GroupStore(pool, redis)
        group = await store.create("bench fan-out", members[0])
        await store.add_members(group.group_id, members[1:])
        return group.group_id
    finally:
        await close_pool(pool)
        await redis.aclose()


async def _worker(index: int, spec: GroupSpec, users: list[str], group_id: str) -> GroupResult:
    result = GroupResult()
    mine = users[index :: spec.processes]
    tokens = mint_tokens(mine)
    seen: set[tuple[str, str]] = set()
    last_seq: dict[str, int] = {}
    started_ns = time.time_ns()

    def receiver(user: str) -> Any:
        def on_push(body: dict[str, Any], now_ns: int) -> None:
            key = (user, body["msg_id"])
            if key in seen:
                result.duplicates += 1
                return
            seen.add(key)
            result.received += 1
            seq = int(body["seq"])
            if seq <= last_seq.get(user, 0):
                result.reordered += 1
            last_seq[user] = max(seq, last_seq.get(user, 0))
            scheduled_ns = int(body["client_msg_id"].rsplit(":", 1)[1])
            result.latency_ms.append((now_ns - scheduled_ns) / 1e6)
            result.last_receive = max(result.last_receive, now_ns / 1e9)
            second = int((now_ns - started_ns) / 1e9)
            result.timeline[second] = result.timeline.get(second, 0) + 1

        return on_push

    sessions: list[WireSession] = []
    gate = asyncio.Semaphore(50)

    async def join(position: int, user: str) -> WireSession:
        host, port = spec.connectors[(index + position * spec.processes) % len(spec.connectors)]
        session = WireSession(host, port, source_host=f"127.0.0.{2 + index % 200}")
        async with gate:
            await session.connect()
            await session.login(tokens[user])
        session.on_push = receiver(user)
        session.start_reading()
        return session

    sessions = list(await asyncio.gather(*(join(i, user) for i, user in enumerate(mine))))
    sender = sessions[0]
    # Everyone is logged in everywhere before anyone sends: a short settle.
    await asyncio.sleep(1.0)
    per_process_rate = spec.rate / spec.processes
    total = int(per_process_rate * spec.duration_s)
    interval_ns = int(1e9 / per_process_rate)
    started_ns = time.time_ns()
    result.first_send = started_ns / 1e9
    for n in range(total):
        scheduled_ns = started_ns + n * interval_ns
        delay = (scheduled_ns - time.time_ns()) / 1e9
        if delay > 0.0005:
            await asyncio.sleep(delay)
        sender.send_group(group_id, "g" * 64, f"g{index}-{n}:{scheduled_ns}")
        result.sent += 1
    # Each process only knows its own receipts; it waits for its share of the total.
    expected_here = None if spec.processes > 1 else total * (spec.members - 1)
    deadline = time.monotonic() + spec.duration_s + spec.drain_s
    quiet_since = time.monotonic()
    received = result.received
    # Poll: receipts are counted by socket callbacks; stop when the flow is quiet for 2 s.
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if expected_here is not None and result.received >= expected_here:
            break
        if result.received != received:
            received, quiet_since = result.received, time.monotonic()
        elif time.monotonic() - quiet_since > 2.0 and time.time_ns() > started_ns + int(
            spec.duration_s * 1e9
        ):
            break
    result.errors = sum(len(s.errors) for s in sessions)
    for session in sessions:
        await session.close()
    return result


def run_group(spec: GroupSpec) -> dict[str, Any]:
    """Create the group, run the load, return the summary (and the raw latencies)."""
    from bench.report import latency_summary

    run_id = secrets.token_hex(3)
    users = [f"g{run_id}-{i}" for i in range(spec.members)]
    group_id = asyncio.run(create_group(users))
    parts: list[GroupResult] = run_processes(
        _worker,
        spec.processes,
        (spec, users, group_id),
        timeout_s=2 * spec.duration_s + spec.drain_s + 120,
        label=f"group of {spec.members} at {spec.rate:.0f} msgs/s",
    )
    sent = sum(p.sent for p in parts)
    received = sum(p.received for p in parts)
    latencies = [value for p in parts for value in p.latency_ms]
    first = min(p.first_send for p in parts)
    last = max(p.last_receive for p in parts) or first
    expected = sent * (spec.members - 1)
    timeline: dict[int, int] = {}
    for part in parts:
        for second, count in part.timeline.items():
            timeline[second] = timeline.get(second, 0) + count
    summary = {
        "members": spec.members,
        "offered_msgs_s": spec.rate,
        "sent": sent,
        "expected_deliveries": expected,
        "deliveries": received,
        "deliveries_s": round(received / max(last - first, 1e-6), 1),
        "lost": max(0, expected - received),
        "duplicates": sum(p.duplicates for p in parts),
        "reordered": sum(p.reordered for p in parts),
        "errors": sum(p.errors for p in parts),
        **latency_summary(latencies),
    }
    return {"summary": summary, "latencies": latencies, "timeline": timeline}
