"""Memory cost of idle connections: RSS of one connector before and after N idle logins.

Starts a connector (``python -m connector``) against the stack described by the
``IM_*`` variables (defaults: the local dev stack), opens ``--connections`` TCP
connections from several loopback source addresses (127.0.0.2, 127.0.0.3, ... so
no single source runs out of ephemeral ports), logs each in as its own user, and
reads ``VmRSS`` from ``/proc/<pid>/status`` before and after::

    .venv/bin/python -m bench.idle_rss --connections 5000

Not a test: it takes a minute and a few thousand file descriptors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from auth.tokens import TokenService
from config.settings import Settings
from schemas.protocol import Op, encode, read_frame
from stack.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS_PER_SOURCE = 2000
LOGIN_CONCURRENCY = 100


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft open-files limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root (CAP_SYS_RESOURCE) may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))
            hard = wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_connector(
    connector_id: str, port: int, http_port: int, log_path: Path
) -> subprocess.Popen:
    env = {
        **os.environ,
        "IM_CONNECTOR_ID": connector_id,
        "IM_CONNECTOR_PORT": str(port),
        "IM_CONNECTOR_HTTP_PORT": str(http_port),
        # Idle means idle: no client heartbeats during the measurement.
        "IM_HEARTBEAT_INTERVAL_S": "600",
        "IM_HEARTBEAT_TIMEOUT_S": "1200",
        "IM_LOG_LEVEL": "WARNING",
    }
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "connector"],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not healthy(f"http://127.0.0.1:{http_port}/healthz"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"connector did not come up; see {log_path}")
        time.sleep(0.2)
    return process


async def open_idle_session(
    index: int, port: int, token: str, gate: asyncio.Semaphore
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    source = f"127.0.0.{2 + index // CONNECTIONS_PER_SOURCE}"
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(encode(Op.LOGIN, {"token": token, "device": "bench"}, 1))
        frame = await asyncio.wait_for(read_frame(reader), 30)
        if frame.op != Op.LOGIN_ACK:
            raise RuntimeError(f"login {index} refused: {frame.body}")
    return reader, writer


async def measure(connections: int, settle_s: float) -> dict[str, float]:
    """Open ``connections`` idle logged-in sessions on a fresh connector; return the figures."""
    settings = Settings()
    raise_fd_limit(connections * 2 + 1000)
    run = secrets.token_hex(3)
    connector_id = f"bench-{run}"
    port, http_port = free_port(), free_port()
    log_path = Path(f"/tmp/idle_rss-{connector_id}.log")
    process = start_connector(connector_id, port, http_port, log_path)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await asyncio.sleep(settle_s)
        before = rss_kib(process.pid)
        tokens = TokenService(settings)
        gate = asyncio.Semaphore(LOGIN_CONCURRENCY)
        started = time.monotonic()
        opened = await asyncio.gather(
            *(
                open_idle_session(i, port, tokens.issue(f"bench-{run}-{i}").token, gate)
                for i in range(connections)
            )
        )
        logged_in_s = time.monotonic() - started
        await asyncio.sleep(settle_s)
        after = rss_kib(process.pid)
        per_connection = (after - before) * 1024 / connections
        print(f"connector {connector_id} pid {process.pid}")
        print(f"idle logged-in connections: {connections} (logins took {logged_in_s:.1f}s)")
        print(f"VmRSS before: {before / 1024:.1f} MiB, after: {after / 1024:.1f} MiB")
        print(f"RSS per idle connection: {per_connection / 1024:.1f} KiB ({per_connection:.0f} B)")
        return {
            "connections": connections,
            "bytes_per_conn": round(per_connection),
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "logins_s": round(connections / logged_in_s, 1),
        }
    finally:
        for _, writer in opened:
            writer.close()
        # SIGTERM drains: the connector withdraws itself and unbinds the routes.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before reading")
    args = parser.parse_args()
    asyncio.run(measure(args.connections, args.settle))


if __name__ == "__main__":
    main()
