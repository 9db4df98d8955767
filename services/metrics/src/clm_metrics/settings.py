"""Metrics service settings (``CLM_`` prefix)."""

from __future__ import annotations

from pydantic import Field

from clm_infra.settings import (
    BatchSettings,
    CommonSettings,
    ModelSettings,
    ServerSettings,
    group,
)


class MetricsServer(ServerSettings):
    """Where the metrics service listens (``CLM_METRICS_HOST``, ``CLM_METRICS_PORT``)."""

    model_config = group("CLM_METRICS_")

    port: int = Field(default=8003, ge=1, le=65535, description="Port.")


class MetricsBatch(BatchSettings):
    """The lifecycle consumer's batches (``CLM_METRICS_BATCH_RECORDS`` …)."""

    model_config = group("CLM_METRICS_BATCH_")

    records: int = Field(default=1000, ge=1, description="Most records in a batch.")
    fill_s: float = Field(
        default=0.25,
        ge=0,
        le=10,
        description="Once a batch has records, how long it waits for more (fewer, fuller "
        "batches: KPIs a fraction of a second later, each batch's fixed cost shared).",
    )


class MetricsModelSettings(ModelSettings):
    """The predictive KPIs (``CLM_MODEL_…``; the horizon and discount are the stage engine's)."""

    model_config = group("CLM_MODEL_")

    kpi_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="How long the predictive KPIs are kept per model version and UTC day (and "
        "set of purchasers): the base's expected purchases score every purchasing customer, "
        "a window's predicted CLV all its purchasers; 0: scored on every read.",
    )


class MetricsSettings(CommonSettings):
    server: MetricsServer = Field(default_factory=MetricsServer)
    batch: MetricsBatch = Field(default_factory=MetricsBatch)
    model: MetricsModelSettings = Field(default_factory=MetricsModelSettings)
    metrics_group: str = Field(
        default="clm-metrics", description="Kafka consumer group of the metrics service."
    )
    metrics_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="The consumer with lag on a partition whose offset has not advanced for "
        "this long is stalled: /readyz answers 503 naming it (as the stage engine's).",
    )
    metrics_refresh_s: float = Field(
        default=5.0, gt=0, description="How often the Prometheus KPI gauges are recomputed."
    )
    metrics_segment_refresh_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the segment series (members, entries, exits) are read: one "
        "statement that counts every span of the labelled segments.",
    )
    metrics_minute_retention_days: int = Field(
        default=92,
        ge=1,
        description="Minute buckets older than this are pruned (hours and days stay).",
    )
    metrics_hour_retention_days: int = Field(
        default=400, ge=1, description="Hour rollups older than this are pruned (days stay)."
    )
    metrics_prune_s: float = Field(
        default=300, gt=0, description="How often the retention policy runs."
    )
    metrics_gauge_channels: list[str] = Field(
        default=["paid_search", "social", "email", "referral", "direct", "organic", "display"],
        description="Channels with their own label value in the gauges (others: other).",
    )
    metrics_gauge_max_sources: int = Field(
        default=10, ge=1, le=100, description="Sources labelled in the gauges (the rest: other)."
    )
