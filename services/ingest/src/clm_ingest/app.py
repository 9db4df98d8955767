"""The ingest: websites and shops post touchpoints; they go to Kafka, keyed by customer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from clm_common.auth import KeyVerifier
from clm_common.db import create_engine, ping
from clm_common.health import Check, health_router
from clm_common.kafka import kafka_reachable, make_producer
from clm_common.problem import install_problem_handlers
from clm_common.prom import instrument, metrics_router
from clm_ingest.api import events
from clm_ingest.deps import State
from clm_ingest.limits import BodyLimitMiddleware
from clm_ingest.publisher import Publisher
from clm_ingest.settings import IngestSettings


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url, pool_size=settings.db_pool_size, app_name="clm-ingest"
        )
        publisher = Publisher(
            lambda: make_producer(settings, client_id="clm-ingest"),
            timeout_s=settings.ingest_publish_timeout_s,
            queue_size=settings.ingest_queue_size,
        )
        await publisher.start()
        app.state.clm = State(
            settings=settings,
            engine=engine,
            verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_seconds),
            publisher=publisher,
        )
        try:
            yield
        finally:
            await publisher.close()
            await engine.dispose()

    app = FastAPI(
        title="CLM Stream ingest",
        version="0.1.0",
        description="Touchpoint events in; Kafka out. 2xx only after the broker acknowledged.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.ingest_max_body_bytes)

    def checks() -> Mapping[str, Check]:
        state: State = app.state.clm
        return {
            "postgres": lambda: ping(state.engine),
            "kafka": lambda: kafka_reachable(settings.kafka_bootstrap),
        }

    app.include_router(health_router(checks))
    app.include_router(metrics_router())
    instrument(app)
    app.include_router(events.router)
    return app
