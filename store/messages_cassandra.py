"""The permanent message record in Cassandra (``IM_ARCHIVE_BACKEND=cassandra``).

The scale-out alternative to :mod:`store.messages`, with the same interface:
``store_batch`` (idempotent on ``msg_id``) and ``history(conv_id, after_seq,
limit)``. Table ``messages`` is partitioned by ``conv_id`` and clustered by
``seq`` ascending, so a history page is one slice of one partition. Writes
are upserts of a row keyed by ``(conv_id, seq)``; ``msg_id`` is derived from
that pair, so writing a message twice (a replay after a crash) changes nothing.

Schema: versioned CQL files ``store/cassandra_migrations/NNNN_name.cql``,
applied in order, once each (recorded in ``{keyspace}.schema_migrations``).

cassandra-driver is blocking with its own I/O thread; connecting runs in a
worker thread and each query's ResponseFuture is bridged to an asyncio future.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    ResponseFuture,
    Session,
)
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement

from config.settings import Settings
from schemas.records import StoredMessage
from store.messages import encode_data, stored_message

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("cassandra_migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cql$")
_KEYSPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

# Writes in flight per store_batch: enough to hide round trips, few enough not
# to flood a small node's native-transport queue.
MAX_IN_FLIGHT = 64
REQUEST_TIMEOUT_S = 10.0
PROTOCOL_VERSION = 5

_COLUMNS = "conv_id, seq, msg_id, sender, recipient, group_id, kind, text, ts, client_msg_id, data"


@dataclass(frozen=True)
class CqlMigration:
    """One ``NNNN_name.cql`` file; ``{keyspace}`` in it stands for IM_CASSANDRA_KEYSPACE."""

    version: int
    name: str
    path: Path

    def statements(self, keyspace: str) -> list[str]:
        """The file's statements, comments dropped, split on ``;`` at line end."""
        text = "\n".join(
            line for line in self.path.read_text().splitlines() if not line.strip().startswith("--")
        )
        text = text.replace("{keyspace}", keyspace)
        return [part.strip() for part in re.split(r";\s*$", text, flags=re.M) if part.strip()]


def available_migrations() -> list[CqlMigration]:
    """The migration files in version order; misnamed or duplicate versions are an error."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.cql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.cql")
        found.append(CqlMigration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {MIGRATIONS_DIR}")
    return found


def check_keyspace(name: str) -> str:
    """Keyspace names go into CQL text (they cannot be bound): allow identifiers only."""
    if not _KEYSPACE.match(name):
        raise ValueError(f"IM_CASSANDRA_KEYSPACE={name!r} is not a valid keyspace name")
    return name


def migrate_session(session: Session, keyspace: str) -> list[int]:
    """Apply every CQL migration not applied yet, in order; return the versions applied.

    Every statement is ``IF NOT EXISTS``, so a crash between a migration and its
    record only means it runs again next time.
    """
    keyspace = check_keyspace(keyspace)
    done = _applied_versions(session, keyspace)
    applied_now = []
    for migration in available_migrations():
        if migration.version in done:
            continue
        log.info("applying Cassandra migration %04d_%s", migration.version, migration.name)
        for statement in migration.statements(keyspace):
            session.execute(statement, timeout=60)
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations"
            " (version int PRIMARY KEY, name text, applied_at timestamp)",
            timeout=60,
        )
        session.execute(
            f"INSERT INTO {keyspace}.schema_migrations (version, name, applied_at)"
            " VALUES (%s, %s, toTimestamp(now()))",
            (migration.version, migration.name),
        )
        applied_now.append(migration.version)
    return applied_now


def _applied_versions(session: Session, keyspace: str) -> set[int]:
    exists = session.execute(
        "SELECT table_name FROM system_schema.tables"
        " WHERE keyspace_name = %s AND table_name = 'schema_migrations'",
        (keyspace,),
    ).one()
    if exists is None:
        return set()
    return {
        row.version for row in session.execute(f"SELECT version FROM {keyspace}.schema_migrations")
    }


def connect_cluster(settings: Settings) -> Cluster:
    """A driver Cluster for IM_CASSANDRA_HOSTS:IM_CASSANDRA_PORT (not yet connected).

    LOCAL_QUORUM both ways: with one replica it is that replica; with three, a
    read always overlaps the last acknowledged write.
    """
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        request_timeout=REQUEST_TIMEOUT_S,
    )
    hosts = [host.strip() for host in settings.cassandra_hosts.split(",") if host.strip()]
    return Cluster(
        hosts,
        port=settings.cassandra_port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        # Cassandra 4.0 and newer speak v5; naming it skips the downgrade dance.
        protocol_version=PROTOCOL_VERSION,
        connect_timeout=5,
    )


def _row(message: StoredMessage) -> tuple[Any, ...]:
    return (
        message.conv_id,
        message.seq,
        message.msg_id,
        message.sender,
        message.to,
        message.group_id,
        message.kind,
        message.text,
        message.ts,
        message.client_msg_id,
        encode_data(message.data),
    )


def _message(row: Sequence[Any]) -> StoredMessage:
    conv_id, seq, msg_id, sender, recipient, group_id, kind, text, ts, client_msg_id, data = row
    return stored_message(
        msg_id, conv_id, seq, sender, recipient, group_id, kind, text, ts, client_msg_id, data
    )


def _awaitable(response: ResponseFuture) -> asyncio.Future[Any]:
    """Bridge the driver's callback future (completed on its I/O thread) to asyncio."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(setter: str, value: Any) -> None:
        if not future.done():
            getattr(future, setter)(value)

    response.add_callbacks(
        callback=lambda rows: loop.call_soon_threadsafe(settle, "set_result", rows),
        errback=lambda error: loop.call_soon_threadsafe(settle, "set_exception", error),
    )
    return future


class CassandraArchive:
    """Every CQL statement on ``messages``, in one place; same interface as MessageArchive."""

    def __init__(self, cluster: Cluster, session: Session, keyspace: str) -> None:
        self.cluster = cluster
        self.session = session
        self.keyspace = keyspace
        self._insert: PreparedStatement = session.prepare(
            f"INSERT INTO {keyspace}.messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        # Clustering order is seq ASC, so this is a forward slice of one partition.
        self._history: PreparedStatement = session.prepare(
            f"SELECT {_COLUMNS} FROM {keyspace}.messages WHERE conv_id = ? AND seq > ? LIMIT ?"
        )

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = False) -> CassandraArchive:
        """Connect (in a worker thread: the driver blocks), optionally apply migrations."""
        keyspace = check_keyspace(settings.cassandra_keyspace)

        def connect() -> CassandraArchive:
            cluster = connect_cluster(settings)
            try:
                session = cluster.connect()
                if migrate:
                    migrate_session(session, keyspace)
                return cls(cluster, session, keyspace)
            except BaseException:
                cluster.shutdown()
                raise

        return await asyncio.to_thread(connect)

    async def close(self) -> None:
        """Shut the driver's connections and threads down."""
        await asyncio.to_thread(self.cluster.shutdown)

    async def store_batch(self, messages: Sequence[StoredMessage]) -> None:
        """Write the messages concurrently; returns once every write is acknowledged."""
        if not messages:
            return
        unique = list({message.msg_id: message for message in messages}.values())
        for start in range(0, len(unique), MAX_IN_FLIGHT):
            chunk = unique[start : start + MAX_IN_FLIGHT]
            # One statement per row, not a multi-partition batch: each write goes
            # straight to its replicas (token aware) and none waits on a coordinator log.
            await asyncio.gather(
                *(
                    _awaitable(self.session.execute_async(self._insert, _row(message)))
                    for message in chunk
                )
            )

    async def history(self, conv_id: str, after_seq: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages of the conversation with seq > ``after_seq``, ascending."""
        if limit <= 0:
            return []
        rows = await _awaitable(
            self.session.execute_async(self._history, (conv_id, after_seq, limit))
        )
        return [_message(row) for row in rows]
