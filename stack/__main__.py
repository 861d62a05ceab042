"""``python -m stack up|down|status|logs``: the whole MM-IM stack on this machine.

``up`` uses Docker compose where ``docker info`` succeeds (unless ``--local``),
else local processes: Kafka, Redis and MariaDB from :mod:`stack.infra`, then
the app services. Everything it starts is recorded in pid files under the run
folder (``IM_RUN_DIR``, default ``.run/stack``); ``down`` stops exactly those.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.settings import Settings, load_settings
from stack.cassandra import LocalCassandra
from stack.infra import InfraPorts, LocalInfra
from stack.processes import (
    ManagedProcess,
    StartError,
    http_ok,
    pid_alive,
    python_module,
    tcp_open,
)
from stack.services import AppService, local_services, run_dir
from stack.testing import docker_available

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
INFRA = ("redis", "mariadb", "kafka")


def state_file() -> Path:
    return run_dir() / "stack.json"


def read_pid(name: str) -> int | None:
    path = run_dir() / "pids" / f"{name}.pid"
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def stop_pid(name: str, timeout: float = 20.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL after ``timeout``; True if one was running."""
    pid = read_pid(name)
    path = run_dir() / "pids" / f"{name}.pid"
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    # Each service leads its own session (start_new_session), so its group id is its pid.
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
    path.unlink(missing_ok=True)
    return True


# -- local mode --------------------------------------------------------------------


def local_up(settings: Settings) -> None:
    folder = run_dir()
    infra = LocalInfra(folder, InfraPorts.from_settings(settings))
    running = [name for name in INFRA if read_pid(name)]
    if len(running) == len(INFRA):
        print("infrastructure already running (kafka, redis, mariadb)")
        from store.migrate import migrate

        migrate(settings)
    else:
        for name in running:  # a half-up stack: restart it whole
            stop_pid(name)
        busy = [
            f"{name} port {port}"
            for name, port in (
                ("kafka", infra.ports.kafka),
                ("redis", infra.ports.redis),
                ("mariadb", infra.ports.mysql),
            )
            if tcp_open("127.0.0.1", port)
        ]
        if busy:
            raise StartError(
                "ports already in use by something this stack did not start: "
                + ", ".join(busy)
                + " (stop it, or point IM_KAFKA_BOOTSTRAP / IM_REDIS_URL / IM_MYSQL_PORT elsewhere)"
            )
        started = time.monotonic()
        print("starting kafka, redis, mariadb ...", flush=True)
        infra.start()
        print(f"infrastructure up in {time.monotonic() - started:.1f}s")
    env = {f"IM_{key.upper()}": str(value) for key, value in infra.settings_values().items()}
    if settings.archive_backend == "cassandra":
        env |= cassandra_up(settings)
    for service in local_services(settings):
        start_service(service, env)
    state_file().write_text(json.dumps({"mode": "local"}))


def cassandra_up(settings: Settings) -> dict[str, str]:
    """Start the optional Cassandra archive node (IM_ARCHIVE_BACKEND=cassandra); its IM_* env."""
    node = LocalCassandra(run_dir(), settings.cassandra_port)
    if read_pid("cassandra"):
        print("cassandra already running")
    elif tcp_open("127.0.0.1", settings.cassandra_port):
        raise StartError(
            f"cassandra port {settings.cassandra_port} is in use by something this stack did"
            " not start (stop it, or point IM_CASSANDRA_PORT elsewhere)"
        )
    else:
        started = time.monotonic()
        print("starting cassandra (the message archive) ...", flush=True)
        node.start()
        print(f"cassandra up in {time.monotonic() - started:.1f}s")
    return {f"IM_{key.upper()}": str(value) for key, value in node.settings_values().items()}


def start_service(service: AppService, base_env: dict[str, str]) -> None:
    if read_pid(service.name):
        print(f"{service.name} already running")
        return
    process = ManagedProcess(
        name=service.name,
        argv=python_module(service.module),
        log_path=run_dir() / "logs" / f"{service.name}.log",
        pid_path=run_dir() / "pids" / f"{service.name}.pid",
        env={**base_env, **service.env},
        cwd=REPO_ROOT,
    ).start()
    process.wait_until(lambda: http_ok(service.health_url), 90, "healthy")
    print(f"{service.name} up (pid {process.pid})", flush=True)


def local_down(settings: Settings) -> None:
    names = [service.name for service in reversed(local_services(settings))]
    names += ["cassandra", *reversed(INFRA)]  # cassandra: only if up started it
    for name in names:
        if stop_pid(name):
            print(f"stopped {name}")
    state_file().unlink(missing_ok=True)


def local_status(settings: Settings) -> int:
    infra = LocalInfra(run_dir(), InfraPorts.from_settings(settings))
    rows: list[tuple[str, str, str, bool]] = []
    checks = {
        "redis": (f"redis://127.0.0.1:{infra.ports.redis}", infra.redis_ready),
        "mariadb": (
            f"mysql://127.0.0.1:{infra.ports.mysql}",
            lambda: tcp_open("127.0.0.1", infra.ports.mysql),
        ),
        "kafka": (
            f"kafka://{infra.kafka_bootstrap}",
            lambda: tcp_open("127.0.0.1", infra.ports.kafka),
        ),
    }
    if settings.archive_backend == "cassandra":
        node = LocalCassandra(run_dir(), settings.cassandra_port)
        checks["cassandra"] = (f"cql://127.0.0.1:{node.native_port}", node.ready)
    for name, (address, check) in checks.items():
        pid = read_pid(name)
        rows.append((name, address, str(pid or "-"), bool(pid) and check()))
    for service in local_services(settings):
        pid = read_pid(service.name)
        rows.append(
            (
                service.name,
                service.address,
                str(pid or "-"),
                bool(pid) and http_ok(service.health_url),
            )
        )
    print(f"{'service':<14} {'address':<28} {'pid':>8}  health")
    for name, address, shown_pid, healthy in rows:
        print(f"{name:<14} {address:<28} {shown_pid:>8}  {'healthy' if healthy else 'DOWN'}")
    return 0 if all(row[3] for row in rows) else 1


# -- docker mode -------------------------------------------------------------------


def compose(*args: str) -> int:
    return subprocess.call(["docker", "compose", "-f", str(COMPOSE_FILE), *args])


def mode_in_use() -> str:
    try:
        return str(json.loads(state_file().read_text())["mode"])
    except (FileNotFoundError, ValueError, KeyError):
        return "local"


# -- commands ----------------------------------------------------------------------


def up(local: bool) -> int:
    settings = load_settings()
    run_dir().mkdir(parents=True, exist_ok=True)
    if not local and docker_available():
        profiles = ["--profile", "cassandra"] if settings.archive_backend == "cassandra" else []
        code = compose(*profiles, "up", "-d", "--build", "--wait")
        if code == 0:
            state_file().write_text(json.dumps({"mode": "docker"}))
        return code
    local_up(settings)
    print_endpoints(settings)
    return 0


def print_endpoints(settings: Settings) -> None:
    print(
        f"""
MM-IM is up (local processes, logs in {run_dir() / "logs"}).
  dispatcher  http://127.0.0.1:{settings.dispatcher_port}
  connectors  127.0.0.1:{settings.connector_port}, 127.0.0.1:{settings.connector_port + 1}
  push        http://127.0.0.1:{settings.push_port}
  kafka       {settings.kafka_bootstrap}
  redis       {settings.redis_url}
  mariadb     127.0.0.1:{settings.mysql_port}

Start chatting (two terminals):
  .venv/bin/mmim register alice --password alice-secret
  .venv/bin/mmim register bob --password bob-secret
  .venv/bin/mmim listen --user bob --password bob-secret
  .venv/bin/mmim send --user alice --password alice-secret --to bob "hello bob"
Stop everything with: make down"""
    )


def down() -> int:
    if mode_in_use() == "docker":
        code = compose("--profile", "cassandra", "down")  # with the archive node, if it runs
        state_file().unlink(missing_ok=True)
        return code
    local_down(load_settings())
    return 0


def status() -> int:
    if mode_in_use() == "docker":
        return compose("ps")
    return local_status(load_settings())


def logs() -> int:
    if mode_in_use() == "docker":
        return compose("logs", "-f", "--tail", "50")
    files = sorted((run_dir() / "logs").glob("*.log"))
    if not files:
        print("no logs yet: run make up", file=sys.stderr)
        return 1
    return subprocess.call(["tail", "-n", "20", "-F", *map(str, files)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="mmim-stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start the whole stack")
    up_parser.add_argument(
        "--local", action="store_true", help="local processes even if Docker answers"
    )
    sub.add_parser("down", help="stop what up started")
    sub.add_parser("status", help="each service with address, pid and health")
    sub.add_parser("logs", help="follow the logs")
    args = parser.parse_args()
    try:
        if args.command == "up":
            code = up(args.local or os.environ.get("LOCAL") == "1")
        elif args.command == "down":
            code = down()
        elif args.command == "status":
            code = status()
        else:
            code = logs()
    except StartError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
