"""`python -m stack up|status|down`: the whole stack as `make up` runs it, on spare ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stack.processes import free_port, pid_alive

REPO_ROOT = Path(__file__).resolve().parents[2]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    kafka = free_port()
    while not port_is_free(kafka + 1):  # the controller takes the port above the broker
        kafka = free_port()
    connector = free_port()
    return {
        **os.environ,
        "IM_RUN_DIR": str(tmp_path / "run"),
        "IM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "IM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "IM_MYSQL_PORT": str(free_port()),
        "IM_DISPATCHER_PORT": str(free_port()),
        "IM_LOGIC_WEB_PORT": str(free_port()),
        "IM_PUSH_PORT": str(free_port()),
        # two connectors take port and port + 1
        "IM_CONNECTOR_PORT": str(connector),
        "IM_CONNECTOR_HTTP_PORT": str(free_port()),
    }


def stack_command(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def recorded_pids(run_dir: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text()) for path in (run_dir / "pids").glob("*.pid")}


def test_up_status_down(stack_env: dict[str, str]) -> None:
    run_dir = Path(stack_env["IM_RUN_DIR"])
    pids: dict[str, int] = {}
    try:
        up = stack_command(stack_env, "up", "--local")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "MM-IM is up" in up.stdout

        pids = recorded_pids(run_dir)
        expected = {
            "kafka",
            "redis",
            "mariadb",
            "dispatcher",
            "logic",
            "connector-c1",
            "connector-c2",
            "push",
        }
        assert set(pids) == expected
        assert all(pid_alive(pid) for pid in pids.values())

        status = stack_command(stack_env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("healthy") == len(expected)

        again = stack_command(stack_env, "up", "--local")  # harmless the second time
        assert again.returncode == 0, again.stdout + again.stderr
        assert recorded_pids(run_dir) == pids
    finally:
        down = stack_command(stack_env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    assert recorded_pids(run_dir) == {}
    status = stack_command(stack_env, "status")
    assert status.returncode == 1
