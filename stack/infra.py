"""Local stack infrastructure: Apache Kafka (KRaft), Redis and MariaDB as local processes.

Used where no Docker engine answers: by ``make up`` (fixed ports, data kept under
``.run/``) and by the test fixtures (free ports, a throw-away folder). Each
service runs in the foreground of its own process group so that stopping it
is a signal to one pid we recorded, never a kill by name.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql

from config.settings import Settings
from stack.processes import ManagedProcess, StartError, free_port, log_tail, tcp_open

STACK_DIR = Path(__file__).resolve().parent
KAFKA_POM = STACK_DIR / "kafka-pom.xml"
KAFKA_VERSION = "4.1.1"
KAFKA_HEAP = os.environ.get("IM_KAFKA_HEAP", "512m")
# The archive's inserts slow down several-fold once the pages they touch outgrow
# the buffer pool (docs/operations.md, "Sizing the archive's buffer pool").
MYSQL_BUFFER_POOL = os.environ.get("IM_MYSQL_BUFFER_POOL", "1G")
DATABASE = "mmim"
DB_USER = "mmim"
DB_PASSWORD = "mmim"


def cache_dir() -> Path:
    """Downloads live outside git; ``IM_CACHE_DIR`` overrides ``~/.cache/mmim``."""
    return Path(os.environ.get("IM_CACHE_DIR", Path.home() / ".cache" / "mmim"))


def maven_libs(pom: Path, name: str, version: str) -> Path:
    """The jars ``pom`` lists, copied from Maven Central with mvn into the cache on first use."""
    libs = cache_dir() / f"{name.lower()}-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise StartError(f"mvn not found: install Maven (apt-get install maven) to fetch {name}")
    libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StartError(f"fetching {name} {version} with mvn failed:\n{result.stdout[-3000:]}")
    marker.write_text(version)
    return libs


def kafka_libs() -> Path:
    """The broker's jars (stack/kafka-pom.xml)."""
    return maven_libs(KAFKA_POM, "Kafka", KAFKA_VERSION)


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka writes them (URL-safe base64 of 16 bytes).

    Like Kafka's own ``Uuid.randomUuid``, never one starting with "-": the
    storage tool would read it as an option (about one id in 64).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def require_binary(name: str, package: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StartError(f"{name} not found: install it with `apt-get install {package}`")


@dataclass(frozen=True)
class InfraPorts:
    kafka: int = 19092
    kafka_controller: int = 19093
    redis: int = 16379
    mysql: int = 13306

    @classmethod
    def free(cls) -> InfraPorts:
        return cls(free_port(), free_port(), free_port(), free_port())

    @classmethod
    def from_settings(cls, settings: Settings) -> InfraPorts:
        """The ports the settings point at (the controller listens one above Kafka)."""
        kafka = int(settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
        redis = urlparse(settings.redis_url).port or 6379
        return cls(kafka, kafka + 1, redis, settings.mysql_port)


class LocalInfra:
    """Kafka, Redis and MariaDB under one run folder."""

    def __init__(self, run_dir: Path, ports: InfraPorts | None = None) -> None:
        self.run_dir = run_dir.resolve()
        self.ports = ports or InfraPorts()
        self.data_dir = self.run_dir / "data"
        self.log_dir = self.run_dir / "logs"
        self.pid_dir = self.run_dir / "pids"
        self.processes: list[ManagedProcess] = []

    @classmethod
    def on_free_ports(cls, run_dir: Path) -> LocalInfra:
        return cls(run_dir, InfraPorts.free())

    # -- addresses -------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def mysql_socket(self) -> Path:
        return self.run_dir / "mysql.sock"

    def settings_values(self) -> dict[str, Any]:
        """The Settings fields that point the services at this stack."""
        return {
            "kafka_bootstrap": self.kafka_bootstrap,
            "redis_url": f"redis://127.0.0.1:{self.ports.redis}/0",
            "mysql_host": "127.0.0.1",
            "mysql_port": self.ports.mysql,
            "mysql_user": DB_USER,
            "mysql_password": DB_PASSWORD,
            "mysql_database": DATABASE,
        }

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start the three services, wait until each answers, apply the migrations."""
        for folder in (self.data_dir, self.log_dir, self.pid_dir):
            folder.mkdir(parents=True, exist_ok=True)
        try:
            redis = self._start_redis()
            mysql = self._start_mariadb()
            kafka = self._start_kafka()
            redis.wait_until(self.redis_ready, 30, "answering PING")
            mysql.wait_until(self._mysql_socket_ready, 60, "answering SELECT 1")
            self._bootstrap_database()
            kafka.wait_until(self._kafka_ready, 90, "answering metadata requests")
        except BaseException:
            self.stop()
            raise
        from store.migrate import migrate

        migrate(Settings(**self.settings_values()))

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=20)
        self.processes.clear()

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess(
            name=name,
            argv=argv,
            log_path=self.log_dir / f"{name}.log",
            pid_path=self.pid_dir / f"{name}.pid",
            env=env or {},
        ).start()
        self.processes.append(process)
        return process

    # -- Redis -----------------------------------------------------------------

    def _start_redis(self) -> ManagedProcess:
        binary = require_binary("redis-server", "redis-server")
        folder = self.data_dir / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        return self._spawn(
            "redis",
            [
                binary,
                "--port",
                str(self.ports.redis),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                # The register store and offline lists survive a restart: AOF, fsync every second.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                # Redis rewrites the AOF each time it doubles past 64 MB: under a group
                # fan-out that was a fork and a ~40 MB rewrite every few seconds, CPU
                # the pipeline needed (docs/operations.md, "Redis").
                "--auto-aof-rewrite-min-size",
                "512mb",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
        )

    def redis_ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.ports.redis, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    # -- MariaDB ---------------------------------------------------------------

    def _start_mariadb(self) -> ManagedProcess:
        server = require_binary("mariadbd", "mariadb-server")
        folder = self.data_dir / "mysql"
        if not (folder / "mysql").exists():
            installer = require_binary("mariadb-install-db", "mariadb-server")
            folder.mkdir(parents=True, exist_ok=True)
            user_args = ["--user=root"] if os.geteuid() == 0 else []
            result = subprocess.run(
                [
                    installer,
                    "--no-defaults",
                    f"--datadir={folder}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    *user_args,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                shutil.rmtree(folder, ignore_errors=True)
                raise StartError(
                    f"mariadb-install-db failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
        user_args = ["--user=root"] if os.geteuid() == 0 else []
        return self._spawn(
            "mariadb",
            [
                server,
                "--no-defaults",
                f"--datadir={folder}",
                f"--port={self.ports.mysql}",
                "--bind-address=127.0.0.1",
                f"--socket={self.mysql_socket}",
                f"--pid-file={self.run_dir / 'mariadbd.pid'}",
                "--skip-name-resolve",
                f"--innodb-buffer-pool-size={MYSQL_BUFFER_POOL}",
                "--innodb-flush-log-at-trx-commit=1",
                "--max-connections=500",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
                *user_args,
            ],
        )

    def _root_connection(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.mysql_socket), user="root", autocommit=True)

    def _mysql_socket_ready(self) -> bool:
        try:
            connection = self._root_connection()
        except pymysql.err.OperationalError:
            return False
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)

    def _bootstrap_database(self) -> None:
        """Create the database and the application user (idempotent)."""
        with self._root_connection() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4")
            for host in ("127.0.0.1", "localhost"):
                cursor.execute(
                    f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY %s",
                    (DB_PASSWORD,),
                )
                cursor.execute(f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{DB_USER}'@'{host}'")

    # -- Kafka -----------------------------------------------------------------

    def _kafka_properties(self) -> Path:
        folder = self.data_dir / "kafka"
        folder.mkdir(parents=True, exist_ok=True)
        properties = self.run_dir / "kafka.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.ports.kafka_controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.ports.kafka},"
                    f"CONTROLLER://127.0.0.1:{self.ports.kafka_controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.ports.kafka}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={folder}",
                    # An auto-created msg topic (a connector publishing before the
                    # logic created it) must have the partitions the logic expects.
                    f"num.partitions={Settings().msg_partitions}",
                    # One node: every internal topic has a single replica.
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "default.replication.factor=1",
                    "min.insync.replicas=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "log.retention.hours=168",
                    "log.segment.bytes=67108864",
                ]
            )
            + "\n"
        )
        return properties

    def _log4j_config(self) -> Path:
        config = self.run_dir / "kafka-log4j2.properties"
        config.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.out.type = Console",
                    "appender.out.name = out",
                    "appender.out.layout.type = PatternLayout",
                    "appender.out.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.out.ref = out",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = WARN",
                    "logger.org.name = org.apache.kafka",
                    "logger.org.level = WARN",
                    "logger.started.name = kafka.server.KafkaRaftServer",
                    "logger.started.level = INFO",
                ]
            )
            + "\n"
        )
        return config

    def _start_kafka(self) -> ManagedProcess:
        java = require_binary("java", "openjdk-17-jre-headless")
        libs = kafka_libs()
        properties = self._kafka_properties()
        log4j = self._log4j_config()
        classpath = f"{libs}/*"
        jvm = [
            java,
            f"-Xms{KAFKA_HEAP}",
            f"-Xmx{KAFKA_HEAP}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:ActiveProcessorCount=2",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
        ]
        if not (self.data_dir / "kafka" / "meta.properties").exists():
            result = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={kafka_cluster_id()}",
                    "-c",
                    str(properties),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise StartError(
                    f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}"
                )
        return self._spawn("kafka", [*jvm, "kafka.Kafka", str(properties)])

    def _kafka_ready(self) -> bool:
        if not tcp_open("127.0.0.1", self.ports.kafka):
            return False
        return asyncio.run(kafka_answers(self.kafka_bootstrap))


async def kafka_answers(bootstrap: str) -> bool:
    """True when the broker answers a metadata request and has a controller."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return cluster.get("controller_id", -1) != -1
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


__all__ = ["InfraPorts", "LocalInfra", "kafka_answers", "kafka_libs", "log_tail"]
