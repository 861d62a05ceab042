"""Login storm: many clients log in at once through one connector, from several processes.

Tokens are minted up front (no argon2 in the measured path: that is the
dispatcher's cost, not the connector's); each process opens its share of the
connections from its own loopback source address, sends LOGIN, and waits for
LOGIN_ACK. The figure is logins completed per second of wall time, from the
first connect to the last LOGIN_ACK across all processes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from bench.one_to_one import mint_tokens
from bench.workers import run_processes
from schemas.protocol import Op, encode, read_frame

CONCURRENCY_PER_PROCESS = 200


async def _worker(
    index: int, host: str, port: int, users: list[str], start_at: float
) -> dict[str, Any]:
    tokens = mint_tokens(users)
    source = f"127.0.0.{2 + index % 200}"
    gate = asyncio.Semaphore(CONCURRENCY_PER_PROCESS)
    writers: list[asyncio.StreamWriter] = []
    failures = 0

    async def login(user: str) -> None:
        nonlocal failures
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
                writers.append(writer)
                writer.write(encode(Op.LOGIN, {"token": tokens[user], "device": "storm"}, 1))
                frame = await asyncio.wait_for(read_frame(reader), 30)
                if frame.op != Op.LOGIN_ACK:
                    failures += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                failures += 1

    # All processes start together, whatever their start-up time.
    await asyncio.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    await asyncio.gather(*(login(user) for user in users))
    finished = time.time()
    for writer in writers:
        writer.close()
    return {
        "logins": len(users) - failures,
        "failures": failures,
        "start": started,
        "end": finished,
    }


def run_login_storm(host: str, port: int, logins: int, processes: int) -> dict[str, Any]:
    """``logins`` logins through the connector at host:port; the summary."""
    from bench.idle_rss import raise_fd_limit

    raise_fd_limit(logins + 1000)
    run_id = secrets.token_hex(3)
    users = [f"ls{run_id}-{i}" for i in range(logins)]
    # Spawned processes take a second or two to import: start all at a common moment.
    start_at = time.time() + 3.0 + 0.5 * processes
    shares = [users[i::processes] for i in range(processes)]
    parts = run_processes(
        _share_worker,
        processes,
        (host, port, shares, start_at),
        timeout_s=180,
        label=f"login storm of {logins}",
    )
    done = sum(p["logins"] for p in parts)
    seconds = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    return {
        "logins": done,
        "failures": sum(p["failures"] for p in parts),
        "processes": processes,
        "seconds": round(seconds, 2),
        "logins_s": round(done / seconds, 1) if seconds > 0 else 0.0,
    }


async def _share_worker(
    index: int, host: str, port: int, shares: list[list[str]], start_at: float
) -> dict[str, Any]:
    return await _worker(index, host, port, shares[index], start_at)
