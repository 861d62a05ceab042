"""Exceptions that mean a backend failed (Redis, MySQL, Kafka, the network), not the request.

A request that meets one of them is answered UNAVAILABLE (retry later), never
INTERNAL: the client did nothing wrong and the same request may well succeed.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError
from pymysql.err import MySQLError
from redis.exceptions import RedisError

BACKEND_ERRORS: tuple[type[Exception], ...] = (
    RedisError,
    KafkaError,
    MySQLError,
    OSError,
    asyncio.TimeoutError,
)
