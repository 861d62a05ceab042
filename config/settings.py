"""The one typed settings object of MM-IM.

Every service reads its configuration from environment variables prefixed
``IM_`` (``IM_KAFKA_BOOTSTRAP``, ``IM_REDIS_URL``, ...). Defaults point at the
local stack started by ``make up``. A bad value stops start-up with a message
that names the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]

# Only used when IM_JWT_SECRET is not set: fine for the local stack, refused
# when IM_ENV=production.
DEVELOPMENT_JWT_SECRET = "mmim-local-development-secret-change-me-0123456789abcdef"


class Settings(BaseSettings):
    """All of MM-IM's configuration; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="IM_", extra="ignore", frozen=True)

    env: str = Field("development", pattern="^(development|test|production)$")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    # --- infrastructure
    kafka_bootstrap: str = "127.0.0.1:19092"
    redis_url: str = "redis://127.0.0.1:16379/0"
    mysql_host: str = "127.0.0.1"
    mysql_port: Port = 13306
    mysql_user: str = "mmim"
    mysql_password: str = "mmim"
    mysql_database: str = "mmim"
    mysql_pool_size: int = Field(8, ge=1, le=256)
    archive_backend: str = Field("mysql", pattern="^(mysql|cassandra)$")
    cassandra_hosts: str = "127.0.0.1"
    cassandra_port: Port = 9042
    cassandra_keyspace: str = "mmim"

    # --- Kafka topics
    msg_topic: str = "im.msg"
    persist_topic: str = "im.persist"
    push_topic_prefix: str = "im.push."
    msg_partitions: int = Field(8, ge=1, le=1024)
    topic_replication: int = Field(1, ge=1, le=16)

    # --- auth
    jwt_secret: str = DEVELOPMENT_JWT_SECRET
    token_ttl_s: int = Field(24 * 3600, ge=60)
    # Password logins (store/login_attempts.py); 0 turns a limit off.
    login_failures_per_user: int = Field(10, ge=0)
    login_failure_window_s: int = Field(900, ge=1)
    login_attempts_per_ip_per_min: int = Field(120, ge=0)

    # --- dispatcher
    dispatcher_host: str = "127.0.0.1"
    dispatcher_port: Port = 8080
    reconnect_backoff_initial_ms: int = Field(500, ge=10)
    reconnect_backoff_max_ms: int = Field(30_000, ge=100)

    # --- connector
    connector_id: str = "c1"
    connector_host: str = "127.0.0.1"
    connector_advertised_host: str = ""
    connector_port: Port = 7001
    connector_http_port: Port = 7101
    connector_capacity: int = Field(50_000, ge=1)
    connector_keepalive_s: PositiveSeconds = 2.0
    connector_ttl_s: int = Field(6, ge=2)
    max_frame_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    heartbeat_interval_s: PositiveSeconds = 20.0
    heartbeat_timeout_s: PositiveSeconds = 60.0
    login_timeout_s: PositiveSeconds = 10.0
    send_rate_per_s: float = Field(200.0, gt=0)
    send_burst: int = Field(400, ge=1)
    drain_timeout_s: PositiveSeconds = 5.0

    # --- stream logic
    logic_app_id: str = "mmim-logic"
    logic_web_port: Port = 6066
    logic_batch_size: int = Field(500, ge=1)
    logic_batch_linger_s: float = Field(0.001, ge=0, le=1)
    logic_fetch_max_wait_ms: int = Field(10, ge=1, le=1500)
    logic_fetch_min_bytes: int = Field(16_384, ge=1, le=52_428_800)
    recent_per_conv: int = Field(200, ge=0)
    offline_max_per_user: int = Field(10_000, ge=1)
    offline_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    sync_page_size: int = Field(100, ge=1, le=1000)

    # --- push service
    push_host: str = "127.0.0.1"
    push_port: Port = 8090
    push_service_keys: str = "local-push-key"
    push_rate_per_s: float = Field(100.0, gt=0)

    @field_validator("jwt_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: str) -> str:
        if len(value.encode()) < 32:
            raise ValueError("must be at least 32 bytes (256 bits)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("IM_HEARTBEAT_TIMEOUT_S must be greater than IM_HEARTBEAT_INTERVAL_S")
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_initial_ms:
            raise ValueError(
                "IM_RECONNECT_BACKOFF_MAX_MS must be >= IM_RECONNECT_BACKOFF_INITIAL_MS"
            )
        if self.env == "production" and self.jwt_secret == DEVELOPMENT_JWT_SECRET:
            raise ValueError("IM_JWT_SECRET must be set when IM_ENV=production")
        return self

    @property
    def advertised_host(self) -> str:
        """The host clients are told to connect to."""
        return self.connector_advertised_host or self.connector_host

    @property
    def service_keys(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.push_service_keys.split(",") if k.strip())


def describe_errors(error: ValidationError) -> str:
    """One line per bad setting, naming the environment variable."""
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        name = f"IM_{field.upper()}" if field else "settings"
        lines.append(f"  {name}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Read and validate the settings; on a bad value print which and exit(2)."""
    try:
        return Settings()
    except ValidationError as error:
        print(describe_errors(error), file=sys.stderr)
        raise SystemExit(2) from None
