"""Password logins (``POST /v1/tokens``) counted in Redis, to refuse guessing and floods.

Two limits, both shared by every dispatcher through Redis:

- failed passwords per user id: after ``IM_LOGIN_FAILURES_PER_USER`` failures
  within ``IM_LOGIN_FAILURE_WINDOW_S`` of the first, that id's password logins
  are refused until the window ends (a success clears the count), so a password
  cannot be guessed online;
- attempts per client address: ``IM_LOGIN_ATTEMPTS_PER_IP_PER_MIN`` in each
  minute, so one source cannot keep the dispatchers hashing argon2 passwords.

A refused attempt does no password work at all. Either limit is off at 0.
"""

from __future__ import annotations

from redis.asyncio import Redis

from config.settings import Settings
from schemas.errors import ErrorCode, RateLimitedError

IP_WINDOW_S = 60


def failures_key(user_id: str) -> str:
    return f"login:failures:{user_id}"


def address_key(client_ip: str) -> str:
    return f"login:ip:{client_ip}"


class LoginAttempts:
    """Admits or refuses a password login, and remembers how it went."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.failures_per_user = settings.login_failures_per_user
        self.failure_window_s = settings.login_failure_window_s
        self.attempts_per_ip = settings.login_attempts_per_ip_per_min

    async def admit(self, user_id: str, client_ip: str) -> None:
        """Count this attempt; RateLimitedError if either limit is already reached."""
        pipe = self.redis.pipeline(transaction=False)
        if self.attempts_per_ip:
            pipe.incr(address_key(client_ip))
            pipe.expire(address_key(client_ip), IP_WINDOW_S, nx=True)
            pipe.ttl(address_key(client_ip))
        if self.failures_per_user:
            pipe.get(failures_key(user_id))
            pipe.ttl(failures_key(user_id))
        answers = await pipe.execute()
        if self.attempts_per_ip:
            attempts, _, ttl = answers[:3]
            answers = answers[3:]
            if attempts > self.attempts_per_ip:
                raise RateLimitedError(
                    ErrorCode.RATE_LIMITED,
                    "too many login attempts from this address; retry later",
                    retry_after_s=max(1, ttl),
                )
        if self.failures_per_user:
            failures, ttl = answers
            if failures is not None and int(failures) >= self.failures_per_user:
                raise RateLimitedError(
                    ErrorCode.RATE_LIMITED,
                    "too many failed logins for this user; retry later",
                    retry_after_s=max(1, ttl),
                )

    async def failed(self, user_id: str) -> None:
        """A wrong password (or unknown user): one more failure in the user's window."""
        if not self.failures_per_user:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(failures_key(user_id))
        pipe.expire(failures_key(user_id), self.failure_window_s, nx=True)
        await pipe.execute()

    async def succeeded(self, user_id: str) -> None:
        """The password was right: the user's failures are forgiven."""
        if self.failures_per_user:
            await self.redis.delete(failures_key(user_id))
