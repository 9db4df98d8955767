"""The metrics service: counts lifecycle records into KPI buckets, serves KPIs and /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from clm_infra.consumer import (
    BatchConsumer,
    BatchPolicy,
    PoisonLimitExceeded,
    run_batch_consumer,
    stalled_loops,
)
from clm_infra.db import create_engine, ping
from clm_infra.kafka import kafka_reachable
from clm_infra.worker import Supervisor
from clm_metrics.api import kpis
from clm_metrics.deps import State
from clm_metrics.handler import LifecycleHandler
from clm_metrics.settings import MetricsSettings
from clm_metrics.snapshot import prune_forever, refresh_forever
from clm_web.auth import KeyVerifier
from clm_web.health import Check, health_router
from clm_web.problem import install_problem_handlers, install_problem_openapi
from clm_web.prom import instrument, metrics_router
from clm_web.request_limits import install_request_limits
from clm_web.serve import telemetry


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database.url, pool_size=settings.database.pool_size, app_name="clm-metrics"
        )
        app.state.clm = State(
            settings=settings,
            engine=engine,
            verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_s),
        )
        current: list[BatchConsumer] = []

        stopping = asyncio.Event()

        def register(loop: BatchConsumer | None) -> None:
            current[:] = [] if loop is None else [loop]

        async def consume() -> None:
            await run_batch_consumer(
                settings,
                engine,
                name="clm-metrics",
                topic=settings.topics.lifecycle,
                group_id=settings.metrics_group,
                handler=LifecycleHandler(),
                policy=BatchPolicy(
                    max_records=settings.batch.records,
                    max_wait_ms=round(settings.batch.wait_s * 1000),
                    fill_ms=round(settings.batch.fill_s * 1000),
                    stall_s=settings.metrics_stall_s,
                ),
                register=register,
                stopping=stopping,
            )

        supervisor = Supervisor("metrics consumer", consume, fatal=(PoisonLimitExceeded,))
        app.state.supervisor = supervisor
        app.state.consumers = current
        consumer_task = asyncio.create_task(supervisor.run(), name="metrics-consumer")
        retention = app.state.clm.retention
        refresher = asyncio.create_task(
            refresh_forever(
                engine,
                settings.reporting_currency,
                settings.metrics_refresh_s,
                channels=settings.metrics_gauge_channels,
                max_sources=settings.metrics_gauge_max_sources,
                retention=retention,
                cache=app.state.clm.closed_days,
            ),
            name="kpi-refresher",
        )
        pruner = asyncio.create_task(
            prune_forever(engine, retention, settings.metrics_prune_s), name="kpi-pruner"
        )
        try:
            yield
        finally:
            stopping.set()
            supervisor.stop()
            for loop in list(current):
                loop.stop()
            refresher.cancel()
            pruner.cancel()
            _, pending = await asyncio.wait([consumer_task], timeout=15)
            for task in pending:
                task.cancel()
            await asyncio.gather(refresher, pruner, *pending, return_exceptions=True)
            await engine.dispose()

    app = FastAPI(
        title="CLM Stream metrics",
        version="0.1.0",
        description="Rolling lifecycle KPIs over HTTP and Prometheus.",
        lifespan=lifespan,
        telemetry=telemetry(settings),
    )
    install_problem_handlers(app)
    install_problem_openapi(app, bearer="key")  # a read token

    def checks() -> Mapping[str, Check]:
        state: State = app.state.clm

        async def consumer_alive() -> bool | str:
            if app.state.supervisor.failed is not None:
                return False
            loops = {f"consumer {i}": loop for i, loop in enumerate(app.state.consumers)}
            return stalled_loops(loops) or True

        return {
            "postgres": lambda: ping(state.engine),
            "kafka": lambda: kafka_reachable(settings.kafka.bootstrap),
            "consumer": consumer_alive,
        }

    app.include_router(health_router(checks))
    app.include_router(metrics_router())
    install_request_limits(app, settings)  # inside the request metrics: they count 429s
    instrument(app)
    app.include_router(kpis.router)
    return app
