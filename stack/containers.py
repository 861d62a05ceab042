"""The test stack from testcontainers, where a Docker engine answers.

The same images as docker/compose.yaml: apache/kafka (KRaft), redis, mysql, and
cassandra (the optional archive backend, started only for the tests that ask for it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

KAFKA_IMAGE = "apache/kafka:4.1.1"
REDIS_IMAGE = "redis:7.4"
MYSQL_IMAGE = "mysql:8.4"


@contextlib.contextmanager
def container_stack() -> Iterator[dict[str, Any]]:
    """Start Kafka, Redis and MySQL containers; yield the Settings values pointing at them."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mysql import MySqlContainer
    from testcontainers.redis import RedisContainer

    from config.settings import Settings
    from store.migrate import migrate

    with (
        KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka,
        RedisContainer(REDIS_IMAGE) as redis,
        MySqlContainer(MYSQL_IMAGE, username="mmim", password="mmim", dbname="mmim") as mysql,
    ):
        values: dict[str, Any] = {
            "kafka_bootstrap": kafka.get_bootstrap_server(),
            "redis_url": f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
            "mysql_host": mysql.get_container_host_ip(),
            "mysql_port": int(mysql.get_exposed_port(3306)),
            "mysql_user": "mmim",
            "mysql_password": "mmim",
            "mysql_database": "mmim",
        }
        migrate(Settings(**values))
        yield values


CASSANDRA_IMAGE = "cassandra:5.0"


@contextlib.contextmanager
def cassandra_container() -> Iterator[dict[str, Any]]:
    """Start a Cassandra container (the optional archive); yield the Settings values for it."""
    from testcontainers.community.cassandra import CassandraContainer

    with CassandraContainer(CASSANDRA_IMAGE) as cassandra:
        host, port = cassandra.get_contact_points()[0]
        yield {"archive_backend": "cassandra", "cassandra_hosts": host, "cassandra_port": port}
