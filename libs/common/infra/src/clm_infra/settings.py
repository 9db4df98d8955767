"""Settings shared by every service (pydantic-settings, ``CLM_`` prefix).

Each service subclasses :class:`CommonSettings` with its own fields; values come from the
environment, are validated at start and fail with a message naming the
variable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """What every CLM Stream process needs: where Kafka and Postgres are, topic names."""

    # no env_file: a repo-root .env belongs to docker compose, not to processes run here
    model_config = SettingsConfigDict(env_prefix="CLM_", extra="ignore", frozen=True)

    env: Literal["dev", "test", "prod"] = Field(
        default="prod",
        description="dev seeds well-known keys; prod accepts only keys created with the CLI.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    database_url: str = Field(
        default="postgresql+asyncpg://clm:clm@127.0.0.1:55432/clm",
        description="SQLAlchemy URL of the Postgres database (asyncpg driver).",
    )
    topic_events: str = Field(default="clm.events.v1", description="Touchpoint events topic.")
    topic_lifecycle: str = Field(
        default="clm.lifecycle.v1", description="Enriched lifecycle records topic."
    )
    topic_dlq: str = Field(default="clm.events.dlq.v1", description="Dead-letter topic.")
    events_partitions: int = Field(default=6, ge=1, description="Partitions of the events topic.")
    lifecycle_partitions: int = Field(
        default=6, ge=1, description="Partitions of the lifecycle topic."
    )
    dlq_partitions: int = Field(default=1, ge=1, description="Partitions of the DLQ topic.")
    kafka_session_timeout_ms: int = Field(
        default=30_000, ge=6_000, description="Consumer group session timeout."
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=3_000,
        ge=100,
        description="Consumer heartbeat interval (under a third of the above).",
    )
    log_level: str = Field(default="INFO", description="Log level of our loggers.")
    otel_enabled: bool = Field(
        default=False,
        description=(
            "FastAPI's built-in OpenTelemetry (request spans and metrics to the process's "
            "configured providers). Off by default: Prometheus and the JSON logs are our "
            "observability, and even with no provider set up FastAPI's per-request check "
            "costs ~12% of the ingest's CPU."
        ),
    )
    db_pool_size: int = Field(default=10, ge=1, description="Postgres connection pool size.")
    auth_cache_seconds: float = Field(
        default=10.0, ge=0, description="How long a verified key is cached in memory."
    )
    dev_write_key: str = Field(default="dev-write-key", description="Write key seeded in dev.")
    secrets_key: SecretStr | None = Field(
        default=None,
        description=(
            "Fernet key(s), comma-separated, newest first, that encrypt webhook secrets at rest "
            "(make one with `clm webhooks new-key`). Needed in prod; dev and test fall back to "
            "a well-known key."
        ),
    )
    dev_read_token: str = Field(default="dev-read-token", description="Read token seeded in dev.")
    dev_admin_key: str = Field(default="dev-admin-key", description="Admin key seeded in dev.")
    # Request limits of every HTTP API (clm_web.request_limits): token buckets per key and
    # per client address, in this process (behind N replicas a client gets N times these)
    rate_limit_key_per_s: float = Field(
        default=1_000.0,
        ge=0,
        description="Requests a second one key may make on average (0: no per-key limit).",
    )
    rate_limit_key_burst: int = Field(
        default=2_000, ge=1, description="Requests one key may make at once."
    )
    rate_limit_address_per_s: float = Field(
        default=2_000.0,
        ge=0,
        description="Requests a second one client address may make on average (0: no limit).",
    )
    rate_limit_address_burst: int = Field(
        default=4_000, ge=1, description="Requests one client address may make at once."
    )
    rate_limit_failed_auth_per_s: float = Field(
        default=1.0,
        ge=0,
        description="Refused keys (401) a second one client address may present on average; "
        "past it the address gets 429 before any key lookup (0: no limit).",
    )
    rate_limit_failed_auth_burst: int = Field(
        default=20, ge=1, description="Refused keys one client address may present at once."
    )
    reporting_currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="Currency of the revenue KPIs."
    )
