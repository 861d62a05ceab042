"""A whole MM-IM pipeline as real processes: dispatcher, stream logic, two connectors.

Each pipeline gets its own Redis database and Kafka topics, so the dispatcher
hands out only its own connectors and no other test's traffic mixes with it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from config.settings import Settings
from stack.processes import ManagedProcess, free_port, http_ok, python_module
from stack.testing import TestStack

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


async def create_topic(settings: Settings, name: str, partitions: int) -> None:
    """A topic of the test broker with ``partitions`` partitions (one replica)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """A client of the test stack's Redis, closed after the test."""
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def isolated_redis_url(redis_url: str) -> str:
    """The same Redis server, another database (1..15): a register store of our own."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{secrets.randbelow(15) + 1}"))


def own_deployment(
    settings: Settings, tag: str, partitions: int
) -> tuple[dict[str, str], Settings]:
    """Env vars, and the matching Settings, of a logic deployment with its own app id and topics.

    Services started with the env and test code using the settings see the same
    topics, and no other test's.
    """
    env = {
        "IM_LOGIC_APP_ID": tag,
        "IM_MSG_TOPIC": f"{tag}.msg",
        "IM_PERSIST_TOPIC": f"{tag}.persist",
        "IM_PUSH_TOPIC_PREFIX": f"{tag}.push.",
        "IM_MSG_PARTITIONS": str(partitions),
        "IM_LOG_LEVEL": "INFO",
    }
    ours = settings.model_copy(
        update={
            "logic_app_id": tag,
            "msg_topic": env["IM_MSG_TOPIC"],
            "persist_topic": env["IM_PERSIST_TOPIC"],
            "push_topic_prefix": env["IM_PUSH_TOPIC_PREFIX"],
            "msg_partitions": partitions,
        }
    )
    return env, ours


@dataclass
class ConnectorProcess:
    connector_id: str
    port: int
    http_port: int
    process: ManagedProcess

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@dataclass
class Pipeline:
    """Handles on every process of one pipeline, to talk to and to break."""

    env: dict[str, str]
    log_dir: Path
    dispatcher_url: str = ""
    logic_port: int = 0
    logic: ManagedProcess | None = None
    connectors: list[ConnectorProcess] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)

    def _start(
        self, module: str, name: str, extra: dict[str, str], health_url: str
    ) -> ManagedProcess:
        process = ManagedProcess(
            name=name,
            argv=python_module(module),
            log_path=self.log_dir / f"{name}-{len(self.processes)}.log",
            env={**self.env, **extra},
            cwd=REPO_ROOT,
        ).start()
        self.processes.append(process)
        process.wait_until(lambda: http_ok(health_url), 120.0, "healthy")
        return process

    def start_logic(self) -> ManagedProcess:
        """(Re)start the Faust worker; same app id, so it resumes from the changelog."""
        self.logic = self._start(
            "stream_logic",
            "logic",
            {"IM_LOGIC_WEB_PORT": str(self.logic_port)},
            f"http://127.0.0.1:{self.logic_port}/healthz",
        )
        return self.logic

    def start_connector(self) -> ConnectorProcess:
        connector_id, port, http_port = f"c-{secrets.token_hex(3)}", free_port(), free_port()
        process = self._start(
            "connector",
            f"connector-{connector_id}",
            {
                "IM_CONNECTOR_ID": connector_id,
                "IM_CONNECTOR_PORT": str(port),
                "IM_CONNECTOR_HTTP_PORT": str(http_port),
            },
            f"http://127.0.0.1:{http_port}/healthz",
        )
        connector = ConnectorProcess(connector_id, port, http_port, process)
        self.connectors.append(connector)
        return connector

    def start_dispatcher(self) -> None:
        port = free_port()
        self.dispatcher_url = f"http://127.0.0.1:{port}"
        self._start(
            "dispatcher",
            "dispatcher",
            {"IM_DISPATCHER_PORT": str(port)},
            f"{self.dispatcher_url}/healthz",
        )

    def start_push(self) -> str:
        """Start the push service; return its base URL."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self._start("push", "push", {"IM_PUSH_PORT": str(port)}, f"{url}/healthz")
        return url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


@pytest.fixture
def pipeline(stack: TestStack, tmp_path: Path) -> Iterator[Pipeline]:
    """Logic first (it creates the msg topic), then two connectors and the dispatcher."""
    tag = secrets.token_hex(4)
    env = {
        **stack.env,
        "IM_REDIS_URL": isolated_redis_url(stack.settings.redis_url),
        "IM_MSG_TOPIC": f"im.msg.t-{tag}",
        "IM_PERSIST_TOPIC": f"im.persist.t-{tag}",
        "IM_PUSH_TOPIC_PREFIX": f"im.push.t-{tag}.",
        "IM_MSG_PARTITIONS": "4",
        "IM_LOGIC_APP_ID": f"logic-t-{tag}",
        # A connector killed with -9 is dead to the logic and the dispatcher after 3 s.
        "IM_CONNECTOR_TTL_S": "3",
        "IM_CONNECTOR_KEEPALIVE_S": "0.5",
        "IM_LOG_LEVEL": "INFO",
    }
    running = Pipeline(env=env, log_dir=tmp_path / "logs", logic_port=free_port())
    try:
        running.start_logic()
        running.start_connector()
        running.start_connector()
        running.start_dispatcher()
        yield running
    finally:
        running.stop()
