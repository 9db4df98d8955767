"""Ingest settings (``CLM_`` prefix)."""

from __future__ import annotations

from pydantic import Field, field_validator

from clm_domain.events import EVENT_TYPES
from clm_infra.settings import CommonSettings, RequestLimits, ServerSettings, group


class IngestServer(ServerSettings):
    """Where the ingest listens (``CLM_INGEST_HOST``, ``CLM_INGEST_PORT``)."""

    model_config = group("CLM_INGEST_")

    port: int = Field(default=8001, ge=1, le=65535, description="Port.")


class IngestRequestLimits(RequestLimits):
    """The request limits of every service; per key, the ingest counts events instead
    (``CLM_INGEST_RATE_LIMIT_PER_S``), so requests per key are not limited by default."""

    key_per_s: float = Field(
        default=0.0,
        ge=0,
        description="Requests a second one key may make (0: none; the ingest counts events).",
    )


class IngestSettings(CommonSettings):
    server: IngestServer = Field(default_factory=IngestServer)
    limits: IngestRequestLimits = Field(default_factory=IngestRequestLimits)
    ingest_publish_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for the broker's ack before answering 503."
    )
    ingest_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After (seconds) sent with a 503."
    )
    ingest_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="Largest request body accepted, as sent and once inflated (413 above).",
    )
    ingest_max_batch_events: int = Field(
        default=500, ge=1, description="Most events in one batch request (413 above)."
    )
    ingest_queue_size: int = Field(
        default=20_000, ge=1, description="Events waiting for the producer before 503."
    )
    ingest_rate_limit_per_s: float = Field(
        default=20_000,
        ge=0,
        description="Events a second each write key may send on average (0: no limit); 429 above.",
    )
    ingest_rate_limit_burst: int = Field(
        default=40_000, ge=1, description="Events a write key may send at once (bucket size)."
    )
    ingest_rate_limit_hold_s: float = Field(
        default=0.5,
        ge=0,
        le=5,
        description="How long a request over its key's rate limit is held before its 429.",
    )
    ingest_segment_events: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'JSON object of Segment track event name → touchpoint type (e.g. {"Plan Upgraded": '
            '"purchase", "Order Completed": "custom"}), over the default table.'
        ),
    )
    ingest_segment_default_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="Currency of Segment order events that name none (Segment's default: USD).",
    )
    ingest_webhook_tolerance_s: int = Field(
        default=300, ge=1, description="Largest age of a signed webhook timestamp (Stripe, …)."
    )

    @field_validator("ingest_segment_events")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        wrong = sorted({t for t in value.values() if t not in EVENT_TYPES})
        if wrong:
            raise ValueError(f"unknown touchpoint types {wrong}; known: {sorted(EVENT_TYPES)}")
        return value
