"""Ingest settings (``CLM_`` prefix)."""

from __future__ import annotations

from pydantic import Field

from clm_common.settings import CommonSettings


class IngestSettings(CommonSettings):
    ingest_host: str = Field(default="127.0.0.1", description="Ingest bind address.")
    ingest_port: int = Field(default=8001, ge=1, le=65535, description="Ingest port.")
    ingest_publish_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for the broker's ack before answering 503."
    )
    ingest_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After (seconds) sent with a 503."
    )
    ingest_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    ingest_queue_size: int = Field(
        default=20_000, ge=1, description="Events waiting for the producer before 503."
    )
