"""The table's changelog partition must be the msg topic partition of the same key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from schemas.topics import partition_for


def test_partition_for_matches_the_producers_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(8))
    for conv in ("p:alice:bob", "p:a:b", "s:carol", "g:team-1"):
        key = conv.encode()
        assert partition_for(key, 8) == partitioner(key, partitions, partitions)
