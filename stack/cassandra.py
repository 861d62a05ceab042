"""Apache Cassandra as a local process: the optional message-archive backend.

Only needed when ``IM_ARCHIVE_BACKEND=cassandra``: ``make up`` starts it then,
and the ``cassandra`` test fixture starts it for the tests that ask for it.
The server is ``cassandra-all`` from Maven Central (its runtime classpath
assembled with mvn into the cache dir, like Kafka) run with java 17 in the
foreground of its own process group, with a generated ``cassandra.yaml``
sized for a small shared machine (one token, a 512 MB heap, few threads, no
JMX). Ready means the native protocol answers a CQL query.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stack.infra import maven_libs, require_binary
from stack.processes import ManagedProcess, free_port, tcp_open

STACK_DIR = Path(__file__).resolve().parent
CASSANDRA_POM = STACK_DIR / "cassandra-pom.xml"
CASSANDRA_VERSION = "5.0.4"
CASSANDRA_HEAP = os.environ.get("IM_CASSANDRA_HEAP", "512m")
# Inter-node (gossip) port of ``make up``'s node; the native port is IM_CASSANDRA_PORT.
DEFAULT_STORAGE_PORT = 17000
START_TIMEOUT_S = 150.0

# conf/jvm17-server.options of the Cassandra 5.0 distribution: the module
# exports/opens it needs on Java 17, and the Netty allocator settings.
JVM17_OPTIONS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]


def cassandra_libs() -> Path:
    """The server's jars (stack/cassandra-pom.xml)."""
    return maven_libs(CASSANDRA_POM, "Cassandra", CASSANDRA_VERSION)


class LocalCassandra:
    """One Cassandra node under a run folder (data in ``data/cassandra``, log in ``logs``)."""

    def __init__(
        self,
        run_dir: Path,
        native_port: int = 9042,
        storage_port: int = DEFAULT_STORAGE_PORT,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.native_port = native_port
        self.storage_port = storage_port
        self.data_dir = self.run_dir / "data" / "cassandra"
        self.log_dir = self.run_dir / "logs"
        self.pid_dir = self.run_dir / "pids"
        self.process: ManagedProcess | None = None

    @classmethod
    def on_free_ports(cls, run_dir: Path) -> LocalCassandra:
        return cls(run_dir, free_port(), free_port())

    def settings_values(self) -> dict[str, object]:
        """The Settings fields that point the services at this node."""
        return {
            "archive_backend": "cassandra",
            "cassandra_hosts": "127.0.0.1",
            "cassandra_port": self.native_port,
        }

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the node and wait until it answers CQL; stop it again if it does not."""
        for folder in (self.data_dir / "triggers", self.log_dir, self.pid_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            name="cassandra",
            argv=self.command(),
            log_path=self.log_dir / "cassandra.log",
            pid_path=self.pid_dir / "cassandra.pid",
            cwd=self.run_dir,
        ).start()
        try:
            self.process.wait_until(self.ready, timeout, "answering CQL")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None

    def command(self) -> list[str]:
        """The java command line of the node (writes its config files first)."""
        java = require_binary("java", "openjdk-17-jre-headless")
        libs = cassandra_libs()
        config = self._write_yaml()
        logback = self._write_logback()
        jamm = next(libs.glob("jamm-*.jar"), None)
        return [
            java,
            f"-Xms{CASSANDRA_HEAP}",
            f"-Xmx{CASSANDRA_HEAP}",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxGCPauseMillis=300",
            "-XX:ActiveProcessorCount=2",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            *JVM17_OPTIONS,
            # jamm measures object sizes for memtable accounting.
            *([f"-javaagent:{jamm}"] if jamm else []),
            f"-Dcassandra.config=file://{config}",
            f"-Dlogback.configurationFile={logback}",
            f"-Dcassandra.logdir={self.log_dir}",
            f"-Dcassandra.storagedir={self.data_dir}",
            f"-Dcassandra.triggers_dir={self.data_dir / 'triggers'}",
            "-Dcassandra-foreground=yes",
            # A single fresh node: nothing to wait for on the ring or in gossip.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.initial_token=0",
            "-cp",
            f"{libs}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _write_yaml(self) -> Path:
        data = self.data_dir
        lines = [
            "cluster_name: mmim",
            "num_tokens: 1",
            "initial_token: 0",
            "auto_bootstrap: false",
            "partitioner: org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch: SimpleSnitch",
            "seed_provider:",
            "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider",
            "    parameters:",
            f'      - seeds: "127.0.0.1:{self.storage_port}"',
            "listen_address: 127.0.0.1",
            "rpc_address: 127.0.0.1",
            f"storage_port: {self.storage_port}",
            "start_native_transport: true",
            f"native_transport_port: {self.native_port}",
            "data_file_directories:",
            f"  - {data / 'data'}",
            f"commitlog_directory: {data / 'commitlog'}",
            f"hints_directory: {data / 'hints'}",
            f"saved_caches_directory: {data / 'saved_caches'}",
            f"cdc_raw_directory: {data / 'cdc_raw'}",
            # Acknowledged writes reach the commit log's page cache; it is fsynced every 10 s.
            "commitlog_sync: periodic",
            "commitlog_sync_period: 10000ms",
            "commitlog_segment_size: 32MiB",
            # Two shared cores: few threads, small memtables and caches.
            "concurrent_reads: 4",
            "concurrent_writes: 4",
            "concurrent_counter_writes: 2",
            "concurrent_materialized_view_writes: 2",
            "concurrent_compactors: 1",
            "memtable_heap_space: 64MiB",
            "memtable_offheap_space: 64MiB",
            "key_cache_size: 8MiB",
            "native_transport_max_threads: 16",
            "authenticator: AllowAllAuthenticator",
            "authorizer: AllowAllAuthorizer",
            "dynamic_snitch: false",
            "hinted_handoff_enabled: false",
        ]
        path = self.run_dir / "cassandra.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _write_logback(self) -> Path:
        path = self.run_dir / "cassandra-logback.xml"
        path.write_text(
            "<configuration>\n"
            '  <appender name="out" class="ch.qos.logback.core.ConsoleAppender">\n'
            "    <encoder><pattern>%-5level [%thread] %date{ISO8601} %msg [%logger{0}]%n"
            "</pattern></encoder>\n"
            "  </appender>\n"
            '  <root level="INFO"><appender-ref ref="out"/></root>\n'
            "</configuration>\n"
        )
        return path

    # -- readiness -------------------------------------------------------------

    def ready(self) -> bool:
        """True when the native port answers ``SELECT release_version FROM system.local``."""
        if not tcp_open("127.0.0.1", self.native_port):
            return False
        return cql_answers(["127.0.0.1"], self.native_port)


def cql_answers(hosts: list[str], port: int) -> bool:
    """One CQL round trip with cassandra-driver; False on any connection failure."""
    from cassandra.cluster import Cluster
    from cassandra.policies import RoundRobinPolicy

    cluster = Cluster(
        hosts,
        port=port,
        load_balancing_policy=RoundRobinPolicy(),
        protocol_version=5,
        connect_timeout=3,
        control_connection_timeout=3,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=5).one()
        return row is not None
    except Exception:  # NoHostAvailable, timeouts, a node still starting: not yet
        return False
    finally:
        cluster.shutdown()


@contextlib.contextmanager
def open_test_cassandra(
    mode: str, work_dir: Path, hosts: str, port: int
) -> Iterator[dict[str, Any]]:
    """A real Cassandra for the tests; yield the Settings values that select it.

    ``docker``: a testcontainers container. ``external``: the node at
    ``hosts:port`` if one answers there, else (like ``local``) a node of our own
    on free ports under ``work_dir``, stopped when the block ends.
    """
    if mode == "docker":
        from stack.containers import cassandra_container

        with cassandra_container() as values:
            yield values
        return
    host_list = [host.strip() for host in hosts.split(",") if host.strip()]
    if mode == "external" and cql_answers(host_list, port):
        yield {"archive_backend": "cassandra", "cassandra_hosts": hosts, "cassandra_port": port}
        return
    node = LocalCassandra.on_free_ports(work_dir)
    node.start()
    try:
        yield node.settings_values()
    finally:
        node.stop()


__all__ = ["LocalCassandra", "cassandra_libs", "cql_answers", "open_test_cassandra"]
