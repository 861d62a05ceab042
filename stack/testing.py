"""The stack the tests run against: testcontainers, local processes, or an external one."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import Settings
from stack.processes import settings_env


@dataclass(frozen=True)
class TestStack:
    """Endpoints of a running stack: typed settings plus the same as ``IM_*`` env vars."""

    __test__ = False  # not a pytest test class

    mode: str
    settings: Settings
    env: dict[str, str]


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _stack(mode: str, values: dict[str, Any]) -> TestStack:
    # The whole suite logs in from 127.0.0.1, so the per-address login limit is
    # off; tests/integration/test_dispatcher.py turns it on for its own dispatcher.
    values = {"env": "test", "login_attempts_per_ip_per_min": 0, **values}
    return TestStack(mode=mode, settings=Settings(**values), env=settings_env(values))


@contextlib.contextmanager
def open_test_stack(mode: str, work_dir: Path) -> Iterator[TestStack]:
    """Yield a running, migrated stack; stop whatever this call started."""
    if mode == "auto":
        mode = "docker" if docker_available() else "local"
    if mode == "external":
        from store.migrate import migrate

        settings = Settings()
        migrate(settings)
        yield TestStack(mode="external", settings=settings, env={})
    elif mode == "local":
        from stack.infra import LocalInfra

        infra = LocalInfra.on_free_ports(work_dir)
        infra.start()
        try:
            yield _stack("local", infra.settings_values())
        finally:
            infra.stop()
    elif mode == "docker":
        from stack.containers import container_stack

        with container_stack() as values:
            yield _stack("docker", values)
    else:
        raise ValueError(f"IM_TEST_STACK={mode!r}: expected auto, local, docker or external")
