"""The metrics service's background work, started and stopped with the app: the lifecycle
consumer (supervised: rebuilt until Kafka answers, stopped for good past the poison limit),
the KPI gauge refresher, the segment series' refresher and the retention pruner."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.consumer import BatchPolicy, PoisonLimitExceeded, run_batch_consumer
from clm_infra.worker import Supervisor, Workers
from clm_metrics.deps import State
from clm_metrics.handler import LifecycleHandler
from clm_metrics.repository import pruning
from clm_metrics.segment_gauges import refresh_segments_forever
from clm_metrics.settings import MetricsSettings
from clm_metrics.snapshot import PRUNED, refresh_forever
from clm_metrics.windows import Retention

log = logging.getLogger(__name__)

#: The consumer loop's name while it runs (readiness names it when it stalls).
CONSUMER = "consumer 0"


def build_workers(state: State) -> Workers:
    """The consumer, the gauge refreshers and the pruner of the running service."""
    settings, engine = state.settings, state.engine
    workers = Workers()

    async def consume() -> None:
        await run_batch_consumer(
            settings,
            engine,
            name="clm-metrics",
            topic=settings.topics.lifecycle,
            group_id=settings.metrics_group,
            handler=LifecycleHandler(),
            policy=_policy(settings),
            register=lambda loop: workers.register(CONSUMER, loop),
            stopping=workers.stopping,
        )

    async def refresh() -> None:
        await refresh_forever(
            engine,
            settings.reporting_currency,
            settings.metrics_refresh_s,
            channels=settings.metrics_gauge_channels,
            max_sources=settings.metrics_gauge_max_sources,
            retention=state.retention,
            cache=state.closed_days,
            forecasts=state.forecasts,
        )

    async def refresh_segments() -> None:
        bound = settings.segments.max_active
        await refresh_segments_forever(engine, bound, settings.metrics_segment_refresh_s)

    async def prune() -> None:
        await prune_forever(engine, state.retention, settings.metrics_prune_s)

    workers.supervisors = [Supervisor("metrics consumer", consume, fatal=(PoisonLimitExceeded,))]
    workers.background = [
        ("kpi-refresher", refresh),
        ("segment-refresher", refresh_segments),
        ("kpi-pruner", prune),
    ]
    return workers


def _policy(settings: MetricsSettings) -> BatchPolicy:
    return BatchPolicy(
        max_records=settings.batch.records,
        max_wait_s=settings.batch.wait_s,
        fill_s=settings.batch.fill_s,
        stall_s=settings.metrics_stall_s,
    )


async def prune_forever(engine: AsyncEngine, retention: Retention, every_s: float) -> None:
    """The retention policy: minute rows after ``minute_days``, hour rows after ``hour_days``
    (each run one transaction, owned here)."""
    while True:
        try:
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                n = await pruning.prune(
                    conn,
                    minutes_before=now - timedelta(days=retention.minute_days, hours=1),
                    hours_before=now - timedelta(days=retention.hour_days + 1),
                )
            PRUNED.set(n)
        except Exception:
            log.warning("KPI retention run failed", exc_info=True)
        await asyncio.sleep(every_s)
