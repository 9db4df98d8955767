"""Stage engine settings (``CLM_`` prefix)."""

from __future__ import annotations

from pydantic import Field

from clm_common.settings import CommonSettings


class StageEngineSettings(CommonSettings):
    stage_engine_host: str = Field(default="127.0.0.1", description="Read API bind address.")
    stage_engine_port: int = Field(default=8002, ge=1, le=65535, description="Read API port.")
    stage_engine_group: str = Field(
        default="clm-stage-engine", description="Kafka consumer group of the stage engine."
    )
    stage_engine_batch_records: int = Field(default=500, ge=1, description="Max records a batch.")
    stage_engine_batch_wait_ms: int = Field(default=200, ge=1, description="Max wait a batch.")
    stage_engine_outbox_poll_ms: int = Field(
        default=100, ge=10, description="How often the outbox relay looks for new rows."
    )
