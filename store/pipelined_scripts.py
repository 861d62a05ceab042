"""Lua scripts in non-transactional pipelines, one round trip per execute.

redis-py makes a pipeline that carries a registered script ask ``SCRIPT EXISTS``
before it runs: one more round trip on every execute, on the paths that batch
the most (offline writes, ack removals, logins). Here a script call is queued as
a bare ``EVALSHA`` (redis-py computes the SHA locally); on the rare ``NOSCRIPT``
(Redis restarted or its script cache was flushed) the script is loaded and only
the calls that failed run again, so nothing runs twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


class ScriptPipeline:
    """A non-transactional pipeline whose script calls go by their SHA alone.

    Plain commands are queued on :attr:`pipe` as usual; script calls through
    :meth:`call`. :meth:`execute` returns one reply per queued command, in order.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.pipe = redis.pipeline(transaction=False)
        self._script_calls: dict[int, tuple[AsyncScript, Sequence[Any], Sequence[Any]]] = {}

    def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue one call of ``script``."""
        self._script_calls[len(self.pipe)] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Run everything queued in one round trip (two after a lost script cache).

        With ``raise_on_error=False`` a failed command's reply is its exception,
        so each caller sharing the pipeline can see only its own failure.
        """
        replies = list(await self.pipe.execute(raise_on_error=False))
        missing = [
            index
            for index, reply in enumerate(replies)
            if isinstance(reply, NoScriptError) and index in self._script_calls
        ]
        if missing:
            await self._run_again(missing, replies)
        self._script_calls = {}
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def _run_again(self, missing: list[int], replies: list[Any]) -> None:
        scripts = {id(self._script_calls[i][0]): self._script_calls[i][0] for i in missing}
        for script in scripts.values():
            await self.redis.script_load(script.script)
        async with self.redis.pipeline(transaction=False) as again:
            for index in missing:
                script, keys, args = self._script_calls[index]
                again.evalsha(script.sha, len(keys), *keys, *args)
            for index, reply in zip(
                missing, await again.execute(raise_on_error=False), strict=True
            ):
                replies[index] = reply
