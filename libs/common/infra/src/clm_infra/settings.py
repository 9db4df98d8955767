"""Settings shared by every service (pydantic-settings, ``CLM_`` prefix).

Settings are grouped: where Kafka is and how to reach it (:class:`KafkaSettings`), the topics
(:class:`TopicSettings`), Postgres (:class:`DatabaseSettings`), the HTTP request limits
(:class:`RequestLimits`); each service adds its server and batch groups and its own fields.
Every group reads its own variables (``CLM_KAFKA_BOOTSTRAP``, ``CLM_DATABASE_URL`` …).
Durations are seconds, named ``…_s``. Values are validated at start and refused with a message
naming the variable; a variable under a name an older version used is refused with its new name.
``docs/configuration.md`` is generated from these models (``tools/docs/settings_reference.py``).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

#: variables older versions read, and what replaced them (refused, so nothing is silently unset)
RENAMED = {
    "CLM_KAFKA_SESSION_TIMEOUT_MS": "CLM_KAFKA_SESSION_TIMEOUT_S (seconds)",
    "CLM_KAFKA_HEARTBEAT_INTERVAL_MS": "CLM_KAFKA_HEARTBEAT_INTERVAL_S (seconds)",
    "CLM_EVENTS_PARTITIONS": "CLM_TOPIC_EVENTS_PARTITIONS",
    "CLM_LIFECYCLE_PARTITIONS": "CLM_TOPIC_LIFECYCLE_PARTITIONS",
    "CLM_DLQ_PARTITIONS": "CLM_TOPIC_DLQ_PARTITIONS",
    "CLM_DB_POOL_SIZE": "CLM_DATABASE_POOL_SIZE",
    "CLM_AUTH_CACHE_SECONDS": "CLM_AUTH_CACHE_S",
    "CLM_STAGE_ENGINE_BATCH_WAIT_MS": "CLM_STAGE_ENGINE_BATCH_WAIT_S (seconds)",
    "CLM_STAGE_ENGINE_OUTBOX_POLL_MS": "CLM_STAGE_ENGINE_OUTBOX_POLL_S (seconds)",
    "CLM_STAGE_ENGINE_SWEEP_SECONDS": "CLM_STAGE_ENGINE_SWEEP_S",
    "CLM_STAGE_ENGINE_STALL_SECONDS": "CLM_STAGE_ENGINE_STALL_S",
    "CLM_WEBHOOK_POLL_MS": "CLM_WEBHOOK_POLL_S (seconds)",
    "CLM_METRICS_BATCH_WAIT_MS": "CLM_METRICS_BATCH_WAIT_S (seconds)",
    "CLM_METRICS_BATCH_FILL_MS": "CLM_METRICS_BATCH_FILL_S (seconds)",
    "CLM_METRICS_STALL_SECONDS": "CLM_METRICS_STALL_S",
    "CLM_METRICS_REFRESH_SECONDS": "CLM_METRICS_REFRESH_S",
    "CLM_METRICS_PRUNE_SECONDS": "CLM_METRICS_PRUNE_S",
}


def group(prefix: str) -> SettingsConfigDict:
    """The model config of a settings group whose variables start with ``prefix``."""
    # no env_file: a repo-root .env belongs to docker compose, not to processes run here
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", frozen=True)


class KafkaSettings(BaseSettings):
    """Where the brokers are and how to reach them (``CLM_KAFKA_…``)."""

    model_config = group("CLM_KAFKA_")

    bootstrap: str = Field(
        default="127.0.0.1:9092", description="Bootstrap servers, host:port[,host:port]."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How clients talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signs the brokers' certificates (TLS)."
    )
    ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM), for brokers that require one."
    )
    ssl_keyfile: Path | None = Field(default=None, description="Client certificate's key (PEM).")
    session_timeout_s: float = Field(
        default=30.0, ge=6, description="Consumer group session timeout."
    )
    heartbeat_interval_s: float = Field(
        default=3.0, ge=0.1, description="Consumer heartbeat interval (under a third of the above)."
    )

    @model_validator(mode="after")
    def _complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"CLM_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "CLM_KAFKA_SASL_USERNAME and CLM_KAFKA_SASL_PASSWORD"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("CLM_KAFKA_SSL_CERTFILE and CLM_KAFKA_SSL_KEYFILE go together")
        return self

    def client_options(self) -> dict[str, Any]:
        """The connection arguments every aiokafka client (producer, consumer, admin) takes."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context: the system's CAs, or ``ssl_cafile``; a client certificate
        when one is configured."""
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context


class TopicSettings(BaseSettings):
    """The topics' names and partition counts (``CLM_TOPIC_…``)."""

    model_config = group("CLM_TOPIC_")

    events: str = Field(default="clm.events.v1", description="Touchpoint events topic.")
    lifecycle: str = Field(default="clm.lifecycle.v1", description="Lifecycle records topic.")
    dlq: str = Field(default="clm.events.dlq.v1", description="Dead-letter topic.")
    events_partitions: int = Field(default=6, ge=1, description="Partitions of the events topic.")
    lifecycle_partitions: int = Field(
        default=6, ge=1, description="Partitions of the lifecycle topic."
    )
    dlq_partitions: int = Field(default=1, ge=1, description="Partitions of the DLQ topic.")
    segments: str = Field(default="clm.segments.v1", description="Segment entries and exits topic.")
    segments_partitions: int = Field(
        default=6, ge=1, description="Partitions of the segments topic."
    )


class DatabaseSettings(BaseSettings):
    """Postgres (``CLM_DATABASE_…``)."""

    model_config = group("CLM_DATABASE_")

    url: str = Field(
        default="postgresql+asyncpg://clm:clm@127.0.0.1:55432/clm",
        description="SQLAlchemy URL of the Postgres database (asyncpg driver).",
    )
    pool_size: int = Field(default=10, ge=1, description="Connection pool size of a process.")


class RequestLimits(BaseSettings):
    """Request limits of every HTTP API (``CLM_RATE_LIMIT_…``): token buckets per key and per
    client address, in this process (behind N replicas a client gets N times these)."""

    model_config = group("CLM_RATE_LIMIT_")

    key_per_s: float = Field(
        default=1_000.0,
        ge=0,
        description="Requests a second one key may make on average (0: no per-key limit).",
    )
    key_burst: int = Field(default=2_000, ge=1, description="Requests one key may make at once.")
    address_per_s: float = Field(
        default=2_000.0,
        ge=0,
        description="Requests a second one client address may make on average (0: no limit).",
    )
    address_burst: int = Field(
        default=4_000, ge=1, description="Requests one client address may make at once."
    )
    failed_auth_per_s: float = Field(
        default=1.0,
        ge=0,
        description="Refused keys (401) a second one client address may present on average; "
        "past it the address gets 429 before any key lookup (0: no limit).",
    )
    failed_auth_burst: int = Field(
        default=20, ge=1, description="Refused keys one client address may present at once."
    )


class ServerSettings(BaseSettings):
    """Where a service's HTTP API listens; each service names its own variables."""

    model_config = group("CLM_SERVER_")

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port.")


class BatchSettings(BaseSettings):
    """How a consumer loop cuts its micro-batches; each consumer names its own variables."""

    model_config = group("CLM_BATCH_")

    records: int = Field(default=500, ge=1, description="Most records in a batch.")
    wait_s: float = Field(
        default=0.2, gt=0, le=60, description="Longest wait for the first records of a batch."
    )
    fill_s: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Once a batch has records, how long it waits for more (fewer, fuller "
        "batches: results a fraction of a second later, each batch's fixed cost shared).",
    )


class ModelSettings(BaseSettings):
    """The predictive models' scores, read alike by the stage engine (each customer's) and
    the metrics service (the KPIs): ``CLM_MODEL_…``."""

    model_config = group("CLM_MODEL_")

    horizon_months: int = Field(
        default=12, ge=1, le=120, description="The horizon of predicted CLV, in months."
    )
    monthly_discount: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="The monthly discount rate of predicted CLV (0.01: 1 % a month).",
    )


class SegmentSettings(BaseSettings):
    """Segments: how many may be active (the stage engine refuses more, and the metrics
    service's Prometheus labels are bounded by it) and how a backfill walks the customers
    (``CLM_SEGMENTS_…``)."""

    model_config = group("CLM_SEGMENTS_")

    max_active: int = Field(
        default=100, ge=1, le=1000, description="Segments that may be defined at once."
    )
    backfill_chunk: int = Field(
        default=1000, ge=1, le=100_000, description="Customers a backfill step evaluates."
    )
    backfill_poll_s: float = Field(
        default=1.0, gt=0, description="How often the stage engine looks for a backfill to do."
    )


class PrivacySettings(BaseSettings):
    """The master key that wraps the customers' data keys, and the data keys' cache
    (``CLM_PRIVACY_…``; docs/security.md, "Personal data")."""

    model_config = group("CLM_PRIVACY_")

    master_keys: SecretStr | None = Field(
        default=None,
        description="Master keys, comma-separated `id:base64-of-32-bytes`, newest first: the "
        "first wraps new data keys, the others still unwrap until `clm privacy rotate` "
        "re-wrapped theirs (make one with `clm privacy new-master-key`). Needed in prod by the "
        "ingest, the stage engine and the CLI; dev and test fall back to a well-known key.",
    )
    master_keys_file: Path | None = Field(
        default=None,
        description="A file holding the master keys instead (one `id:key` a line, newest "
        "first), e.g. a mounted secret.",
    )
    key_cache_size: int = Field(
        default=100_000, ge=0, description="Data keys a process keeps in memory (0: none)."
    )
    key_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a cached data key is used before it is read again: after an "
        "erasure, an ingest may seal a returning customer's first events under the erased "
        "key for this long (those fields then read as erased).",
    )


class CommonSettings(BaseSettings):
    """What every CLM Stream process needs: Kafka, topics, Postgres, keys, limits, logging."""

    model_config = group("CLM_")

    env: Literal["dev", "test", "prod"] = Field(
        default="prod",
        description="dev seeds well-known keys; prod accepts only keys created with the CLI.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    log_level: str = Field(default="INFO", description="Log level of our loggers.")
    otel_enabled: bool = Field(
        default=False,
        description="FastAPI's built-in OpenTelemetry (request spans and metrics to the "
        "process's configured providers). Off by default: Prometheus and the JSON logs are "
        "our observability (docs/performance.md says what it costs).",
    )
    auth_cache_s: float = Field(
        default=10.0, ge=0, description="How long a verified key is cached in memory."
    )
    dev_write_key: str = Field(default="dev-write-key", description="Write key seeded in dev.")
    dev_read_token: str = Field(default="dev-read-token", description="Read token seeded in dev.")
    dev_admin_key: str = Field(default="dev-admin-key", description="Admin key seeded in dev.")
    secrets_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated, newest first, that encrypt webhook "
        "secrets at rest (make one with `clm webhooks new-key`). Needed in prod; dev and test "
        "fall back to a well-known key.",
    )
    reporting_currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="Currency of the revenue KPIs."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_renamed_variables(cls, data: Any) -> Any:
        used = sorted(name for name in RENAMED if name in os.environ)
        if used:
            said = "; ".join(f"{name} is now {RENAMED[name]}" for name in used)
            raise ValueError(f"renamed settings: {said}")
        return data


def variables(model: type[BaseSettings]) -> dict[str, tuple[str, FieldInfo]]:
    """Every environment variable ``model`` reads: its name, the field's dotted path
    (``kafka.bootstrap``) and the field, groups included, in declaration order."""
    prefix = str(model.model_config.get("env_prefix", ""))
    found: dict[str, tuple[str, FieldInfo]] = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            for variable, (path, field) in variables(kind).items():
                found[variable] = (f"{name}.{path}", field)
        else:
            found[f"{prefix}{name}".upper()] = (name, info)
    return found
