"""Metrics service settings (``CLM_`` prefix)."""

from __future__ import annotations

from pydantic import Field

from clm_infra.settings import CommonSettings


class MetricsSettings(CommonSettings):
    metrics_host: str = Field(default="127.0.0.1", description="Metrics bind address.")
    metrics_port: int = Field(default=8003, ge=1, le=65535, description="Metrics port.")
    metrics_group: str = Field(
        default="clm-metrics", description="Kafka consumer group of the metrics service."
    )
    metrics_batch_records: int = Field(default=1000, ge=1, description="Max records a batch.")
    metrics_batch_wait_ms: int = Field(default=200, ge=1, description="Max wait a batch.")
    metrics_batch_fill_ms: int = Field(
        default=250,
        ge=0,
        le=10_000,
        description="Once a batch has records, how long it waits for more (fewer, fuller "
        "batches: KPIs a fraction of a second later, each batch's fixed cost shared).",
    )
    metrics_stall_seconds: float = Field(
        default=120.0,
        gt=0,
        description="The consumer with lag on a partition whose offset has not advanced for "
        "this long is stalled: /readyz answers 503 naming it (as the stage engine's).",
    )
    metrics_refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often the Prometheus KPI gauges are recomputed."
    )
    metrics_minute_retention_days: int = Field(
        default=92,
        ge=1,
        description="Minute buckets older than this are pruned (hours and days stay).",
    )
    metrics_hour_retention_days: int = Field(
        default=400, ge=1, description="Hour rollups older than this are pruned (days stay)."
    )
    metrics_prune_seconds: float = Field(
        default=300, gt=0, description="How often the retention policy runs."
    )
    metrics_gauge_channels: list[str] = Field(
        default=["paid_search", "social", "email", "referral", "direct", "organic", "display"],
        description="Channels with their own label value in the gauges (others: other).",
    )
    metrics_gauge_max_sources: int = Field(
        default=10, ge=1, le=100, description="Sources labelled in the gauges (the rest: other)."
    )
