"""Kafka topic names, derived from the settings in one place."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2

from config.settings import Settings


def msg_topic(settings: Settings) -> str:
    """Client messages, keyed by conversation id."""
    return settings.msg_topic


def persist_topic(settings: Settings) -> str:
    """Sequenced messages waiting to be archived, keyed by conversation id."""
    return settings.persist_topic


def fanout_topic(settings: Settings) -> str:
    """Sequenced group messages waiting for fan-out (internal to the logic), key = conv id.

    Derived from the msg topic's name so that each deployment gets its own.
    """
    return f"{settings.msg_topic}.fanout"


def push_topic(settings: Settings, connector_id: str) -> str:
    """The push queue drained by one connector."""
    return f"{settings.push_topic_prefix}{connector_id}"


@functools.lru_cache(maxsize=65_536)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) puts ``key`` in.

    Cached: murmur2 is pure Python in aiokafka and the same conversation ids recur.
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
