"""Stage engine settings (``CLM_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from clm_infra.settings import (
    BatchSettings,
    CommonSettings,
    ModelSettings,
    ServerSettings,
    group,
)


class StageEngineServer(ServerSettings):
    """Where the read API listens (``CLM_STAGE_ENGINE_HOST``, ``CLM_STAGE_ENGINE_PORT``)."""

    model_config = group("CLM_STAGE_ENGINE_")

    port: int = Field(default=8002, ge=1, le=65535, description="Port.")


class StageEngineBatch(BatchSettings):
    """Each lane's batches of events (``CLM_STAGE_ENGINE_BATCH_RECORDS`` …)."""

    model_config = group("CLM_STAGE_ENGINE_BATCH_")


class WebhookSettings(BaseSettings):
    """Stage-change webhook delivery (``CLM_WEBHOOK_…``)."""

    model_config = group("CLM_WEBHOOK_")

    timeout_s: float = Field(
        default=5.0, gt=0, description="Webhook POST deadline (the whole exchange)."
    )
    concurrency: int = Field(
        default=16,
        ge=1,
        description="Subscribers served at once (one worker each, its deliveries in order).",
    )
    max_attempts: int = Field(
        default=8, ge=1, description="Deliveries failing this often are parked."
    )
    poll_s: float = Field(default=0.5, ge=0.01, description="How often the dispatcher polls.")
    allow_insecure: bool = Field(
        default=False,
        description="Accept http:// subscription URLs (dev and tests only; https otherwise).",
    )
    allowed_hosts: str = Field(
        default="",
        description="Comma-separated host names or IP addresses a subscription may name even "
        "though they are (or resolve to) private, loopback or link-local addresses.",
    )


class EngineModelSettings(ModelSettings):
    """The predictive models: fitting BG/NBD and Gamma-Gamma, and scoring with them
    (``CLM_MODEL_…``; the horizon and discount are shared with the metrics service)."""

    model_config = group("CLM_MODEL_")

    refit_interval_s: float = Field(
        default=86_400.0,
        gt=0,
        description="How often one replica (an advisory lock elects it) refits the models "
        "from every customer's purchase facts; 0 is not allowed: a fit also runs on demand "
        "(clm model fit).",
    )
    min_repeat_customers: int = Field(
        default=100,
        ge=10,
        description="A fit needs at least this many customers with a repeat purchase (and a "
        "currency's spend model this many in that currency); with fewer, the previous "
        "parameters stay and clm status says why.",
    )
    reload_s: float = Field(
        default=30.0,
        gt=0,
        description="How often a replica looks for newer parameters than the ones it scores with.",
    )


class StageEngineSettings(CommonSettings):
    server: StageEngineServer = Field(default_factory=StageEngineServer)
    batch: StageEngineBatch = Field(default_factory=StageEngineBatch)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    model: EngineModelSettings = Field(default_factory=EngineModelSettings)
    stage_engine_group: str = Field(
        default="clm-stage-engine", description="Kafka consumer group of the stage engine."
    )
    stage_engine_lanes: int = Field(
        default=3,
        ge=1,
        le=64,
        description="Consumer loops side by side in the process, each its own member of the "
        "consumer group (its own partitions, batches, transactions and connection): one "
        "lane's statements run in Postgres while another's events are folded. 3 deals the "
        "6 default partitions out evenly to one process (2 each) or two (1 each).",
    )
    stage_engine_known_states: int = Field(
        default=50_000,
        ge=0,
        description="Customer rows the engine keeps in memory as it last wrote them, so a "
        "batch reads only the others (each row's version is checked when written back); "
        "about 1.3 KB each; 0: every batch reads all its customers.",
    )
    stage_engine_outbox_max_backlog: int = Field(
        default=20_000,
        ge=0,
        description="Lanes wait before their next fetch while more lifecycle records than "
        "this wait in the outbox, so the relay keeps up with them; 0: no limit.",
    )
    stage_engine_outbox_poll_s: float = Field(
        default=0.1, ge=0.01, description="How often the outbox relay looks for new rows."
    )
    stage_engine_rules_path: Path | None = Field(
        default=None,
        description="Lifecycle rule file (YAML); default: deploy/config/lifecycle.yaml.",
    )
    stage_vocabulary: Literal["standard", "classic"] = Field(
        default="standard",
        description="Stage names in answers: standard (reach…loyalty) or classic "
        "(awareness, consideration, purchase, retention, advocacy). Both are accepted.",
    )
    stage_engine_sweep_s: float = Field(
        default=60.0, gt=0, description="How often the sweeper applies inactivity moves."
    )
    stage_engine_sweep_batch: int = Field(
        default=1000, ge=1, description="Customers one sweeper transaction moves at most."
    )
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="Server secret (at least 32 characters) of the keyed hashes (HMAC-SHA256) "
        "that remember erased customers and name anonymised ones. Needed in prod; dev and "
        "test fall back to a well-known key. Never change it: tombstones made under another "
        "key are not recognised.",
    )
    stage_engine_role: Literal["all", "api"] = Field(
        default="all",
        description=(
            "all: consume events, relay the outbox, sweep, deliver webhooks and serve the API; "
            "api: serve the API only (read replicas scaled apart from the partitions, whose "
            "reads never wait behind a batch)."
        ),
    )
    stage_engine_stall_s: float = Field(
        default=120.0,
        gt=0,
        description="A lane with lag on a partition whose offset has not advanced for this "
        "long is stalled: /readyz answers 503 naming it, clm status says so, and the "
        "clm_consumer_stalled gauge is 1.",
    )
    stage_engine_idle_recheck_s: float = Field(
        default=5.0, gt=0, description="While idle, how often stored offsets are re-read."
    )
