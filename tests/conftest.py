"""Fixtures that hand out a real stack: Kafka, Redis and MariaDB.

Where the stack comes from (``IM_TEST_STACK``):
- unset / ``auto``: testcontainers when a Docker engine answers, else local
  processes (the same ones ``make up`` runs) on free ports with a throw-away
  data dir;
- ``local`` or ``docker``: force one of those;
- ``external``: an already running stack, described by the ``IM_*`` variables.

No Kafka, Redis or MySQL is ever faked.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from stack.processes import ManagedProcess, free_port, http_ok, python_module, settings_env
from stack.testing import TestStack, open_test_stack

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestStack]:
    mode = os.environ.get("IM_TEST_STACK", "auto")
    with open_test_stack(mode, tmp_path_factory.mktemp("stack")) as opened:
        yield opened


@pytest.fixture(scope="session")
def settings(stack: TestStack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def cassandra(stack: TestStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestStack]:
    """The stack plus a real Cassandra, with IM_ARCHIVE_BACKEND=cassandra.

    Lazy: only the Cassandra tests request it, so the rest of the suite never
    starts the node. Container, local process or (external) an answering node,
    as for ``stack``; the keyspace is unique to this session.
    """
    from stack.cassandra import open_test_cassandra

    base = stack.settings
    with open_test_cassandra(
        stack.mode, tmp_path_factory.mktemp("cassandra"), base.cassandra_hosts, base.cassandra_port
    ) as values:
        values = {**values, "cassandra_keyspace": f"mmim_test_{secrets.token_hex(4)}"}
        yield TestStack(
            mode=stack.mode,
            settings=base.model_copy(update=values),
            env={**stack.env, **settings_env(values)},
        )


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique ids so tests sharing one stack never see each other's users or topics."""

    def make(prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(4)}"

    return make


class Launcher:
    """Starts MM-IM services as real processes against the test stack."""

    def __init__(self, stack: TestStack, log_dir: Path) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self.started: list[ManagedProcess] = []

    def __call__(
        self,
        module: str,
        *args: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        health_url: str | None = None,
        timeout: float = 60.0,
    ) -> ManagedProcess:
        """Run ``python -m module args`` with the stack's ``IM_*`` env plus ``env``.

        With ``health_url``, wait until it answers 2xx (or fail with the log tail).
        """
        name = name or module
        process = ManagedProcess(
            name=name,
            argv=python_module(module, *args),
            log_path=self.log_dir / f"{name}-{len(self.started)}.log",
            env={**self.stack.env, **(env or {})},
            cwd=REPO_ROOT,
        ).start()
        self.started.append(process)
        if health_url:
            process.wait_until(lambda: http_ok(health_url), timeout, "healthy")
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def launch(stack: TestStack, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(stack, tmp_path / "logs")
    yield launcher
    launcher.stop_all()


@pytest.fixture
def port() -> Callable[[], int]:
    """A free TCP port on loopback."""
    return free_port
