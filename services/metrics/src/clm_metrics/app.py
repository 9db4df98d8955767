"""The metrics service's HTTP side: the FastAPI app, its routers and health; the lifespan opens
the database and runs the workers (:mod:`clm_metrics.workers`) for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from clm_metrics.api import kpis
from clm_metrics.deps import State
from clm_metrics.settings import MetricsSettings
from clm_metrics.workers import build_workers
from clm_web.auth import KeyVerifier
from clm_web.health import Check, health_router, service_checks
from clm_web.lifespan import database, workers_running
from clm_web.problem import install_problem_handlers, install_problem_openapi
from clm_web.prom import instrument, metrics_router
from clm_web.request_limits import install_request_limits
from clm_web.serve import telemetry

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    app = FastAPI(
        title="CLM Stream metrics",
        version="0.1.0",
        description="Rolling lifecycle KPIs over HTTP and Prometheus.",
        lifespan=_lifespan(settings),
        telemetry=telemetry(settings),
    )
    install_problem_handlers(app)
    install_problem_openapi(app, bearer="key")  # a read token
    app.include_router(health_router(lambda: _checks(app, settings)))
    app.include_router(metrics_router())
    install_request_limits(app, settings)  # inside the request metrics: they count 429s
    instrument(app)
    app.include_router(kpis.router)
    return app


def _lifespan(settings: MetricsSettings) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with database(settings, "clm-metrics") as engine:
            state = State(
                settings=settings,
                engine=engine,
                verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_s),
            )
            app.state.clm = state
            async with workers_running(app, build_workers(state)):
                yield

    return lifespan


def _checks(app: FastAPI, settings: MetricsSettings) -> Mapping[str, Check]:
    """Readiness: Postgres and Kafka answer, the consumer neither gave up nor stalled."""
    state: State = app.state.clm
    return service_checks(state.engine, settings, lambda: app.state.workers)
