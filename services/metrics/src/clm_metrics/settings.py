"""Metrics service settings (``CLM_`` prefix)."""

from __future__ import annotations

from pydantic import Field

from clm_common.settings import CommonSettings


class MetricsSettings(CommonSettings):
    metrics_host: str = Field(default="127.0.0.1", description="Metrics bind address.")
    metrics_port: int = Field(default=8003, ge=1, le=65535, description="Metrics port.")
    metrics_group: str = Field(
        default="clm-metrics", description="Kafka consumer group of the metrics service."
    )
    metrics_batch_records: int = Field(default=1000, ge=1, description="Max records a batch.")
    metrics_batch_wait_ms: int = Field(default=200, ge=1, description="Max wait a batch.")
    metrics_refresh_seconds: float = Field(
        default=5.0, gt=0, description="How often the Prometheus KPI gauges are recomputed."
    )
