"""MySQL/MariaDB connection pools (aiomysql) for the async services."""

from __future__ import annotations

import aiomysql

from config.settings import Settings

# Server-side idle connections are dropped after wait_timeout (8 h by default);
# recycling earlier avoids handing out a connection the server already closed.
POOL_RECYCLE_S = 3600


async def create_pool(
    settings: Settings, *, minsize: int = 1, maxsize: int | None = None
) -> aiomysql.Pool:
    """A pool of autocommit, utf8mb4 connections to ``IM_MYSQL_*``.

    ``maxsize`` defaults to ``IM_MYSQL_POOL_SIZE``. Close it with :func:`close_pool`.
    """
    maxsize = maxsize if maxsize is not None else settings.mysql_pool_size
    return await aiomysql.create_pool(
        host=settings.mysql_host,
        port=settings.mysql_port,
        user=settings.mysql_user,
        password=settings.mysql_password,
        db=settings.mysql_database,
        charset="utf8mb4",
        autocommit=True,
        minsize=min(minsize, maxsize),
        maxsize=maxsize,
        pool_recycle=POOL_RECYCLE_S,
    )


async def close_pool(pool: aiomysql.Pool) -> None:
    """Close every connection of the pool and wait until they are gone."""
    pool.close()
    await pool.wait_closed()
