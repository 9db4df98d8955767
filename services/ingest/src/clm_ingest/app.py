"""The ingest: websites and shops post touchpoints; they go to Kafka, keyed by customer.

:func:`create_app` composes the app: its lifespan (the Postgres engine, the Kafka publisher
and the state the routes read), its middleware stack and its routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.kafka import make_producer
from clm_infra.privacy.ciphers import master_keys
from clm_infra.privacy.store import KeyRing
from clm_infra.webhook_secrets import SecretCache, SecretsKeyMissing, cipher
from clm_ingest.api import events, segment, webhooks
from clm_ingest.deps import State
from clm_ingest.hot_routes import Accept, HotRoutesMiddleware, hot_routes_of
from clm_ingest.limits import BodyLimitMiddleware, GzipRequestMiddleware
from clm_ingest.observability import ObservabilityMiddleware, install_request_id_logging
from clm_ingest.openapi import install_openapi
from clm_ingest.publisher import Publisher
from clm_ingest.ratelimit import TokenBuckets
from clm_ingest.refusals import SegmentError, refusal, segment_response
from clm_ingest.segment import DEFAULT_TRACK_EVENTS
from clm_ingest.settings import IngestSettings
from clm_web.auth import KeyVerifier
from clm_web.health import Check, health_router, service_checks
from clm_web.lifespan import database
from clm_web.problem import install_problem_handlers
from clm_web.prom import instrument, metrics_router
from clm_web.request_limits import install_request_limits
from clm_web.serve import telemetry

log = logging.getLogger(__name__)

HOT_PATHS: dict[str, Accept] = {
    "/v1/events": events.accept_one,
    "/v1/events/batch": events.accept_batch,
}
DESCRIPTION = (
    "Touchpoint events in; Kafka out. 2xx only after the broker acknowledged. "
    "Our own contract (`/v1/events`), Segment's Tracking API, and signed webhooks."
)


def create_app(settings: IngestSettings | None = None, *, hot_routes: bool = True) -> FastAPI:
    """The ingest app. ``hot_routes=False`` leaves ``/v1/events[/batch]`` to FastAPI's router
    (the tests compare both ways of serving them)."""
    settings = settings or IngestSettings()
    app = FastAPI(
        title="CLM Stream ingest",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan(settings),
        telemetry=telemetry(settings),
    )
    install_problem_handlers(app)
    install_request_id_logging()
    app.exception_handler(SegmentError)(_segment_error)
    _install_middleware(app, settings, hot_routes=hot_routes)
    app.include_router(health_router(_readiness_checks(app, settings)))
    app.include_router(metrics_router())
    app.include_router(events.router)
    app.include_router(segment.router)
    app.include_router(webhooks.router)
    install_openapi(app)
    return app


def _lifespan(settings: IngestSettings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with database(settings, "clm-ingest") as engine, publishing(settings) as publisher:
            app.state.clm = _state(settings, engine, publisher)
            yield

    return lifespan


@asynccontextmanager
async def publishing(settings: IngestSettings) -> AsyncIterator[Publisher]:
    """The Kafka publisher, running until the block ends (then it flushes and closes)."""
    publisher = Publisher(
        lambda: make_producer(settings, client_id="clm-ingest"),
        timeout_s=settings.ingest_publish_timeout_s,
        queue_size=settings.ingest_queue_size,
    )
    await publisher.start()
    try:
        yield publisher
    finally:
        await publisher.close()


def _state(settings: IngestSettings, engine: AsyncEngine, publisher: Publisher) -> State:
    return State(
        settings=settings,
        engine=engine,
        verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_s),
        publisher=publisher,
        keyring=KeyRing(
            engine,
            master_keys(settings),
            size=settings.privacy.key_cache_size,
            ttl_s=settings.privacy.key_cache_s,
        ),
        limiter=_event_limiter(settings),
        secrets=_secret_cache(settings, engine),
        track_events={**DEFAULT_TRACK_EVENTS, **settings.ingest_segment_events},
    )


def _event_limiter(settings: IngestSettings) -> TokenBuckets | None:
    if settings.ingest_rate_limit_per_s <= 0:
        return None
    return TokenBuckets(
        rate=settings.ingest_rate_limit_per_s, burst=settings.ingest_rate_limit_burst
    )


def _secret_cache(settings: IngestSettings, engine: AsyncEngine) -> SecretCache | None:
    try:
        box = cipher(settings)
    except SecretsKeyMissing as exc:
        log.warning("webhooks disabled: %s", exc)
        return None
    return SecretCache(engine, box, ttl_s=settings.auth_cache_s)


def _install_middleware(app: FastAPI, settings: IngestSettings, *, hot_routes: bool) -> None:
    """Innermost first: the hot routes right after the body is inflated; the body limit before
    inflating; the request limits (per address, and per key on refused keys) before any body
    is read; observability, then the request metrics, see every answer."""
    if hot_routes:
        app.add_middleware(HotRoutesMiddleware, routes=hot_routes_of(events.router, HOT_PATHS))
    app.add_middleware(GzipRequestMiddleware, max_bytes=settings.ingest_max_body_bytes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.ingest_max_body_bytes)
    install_request_limits(app, settings, refusal)
    app.add_middleware(ObservabilityMiddleware)
    instrument(app)


def _readiness_checks(app: FastAPI, settings: IngestSettings) -> Callable[[], Mapping[str, Check]]:
    def checks() -> Mapping[str, Check]:
        state: State = app.state.clm
        return service_checks(state.engine, settings)

    return checks


async def _segment_error(_: Request, exc: SegmentError) -> JSONResponse:
    return segment_response(exc)
