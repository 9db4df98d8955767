"""The ingest: websites and shops post touchpoints; they go to Kafka, keyed by customer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from clm_domain.events import EVENT_ADAPTER
from clm_infra.db import create_engine, ping
from clm_infra.kafka import kafka_reachable, make_producer
from clm_infra.webhook_secrets import SecretCache, SecretsKeyMissing, cipher
from clm_ingest.api import events, segment, webhooks
from clm_ingest.deps import State
from clm_ingest.hot_routes import HotRoute, HotRoutesMiddleware
from clm_ingest.limits import BodyLimitMiddleware, GzipRequestMiddleware
from clm_ingest.observability import ObservabilityMiddleware, install_request_id_logging
from clm_ingest.publisher import Publisher
from clm_ingest.ratelimit import TokenBuckets
from clm_ingest.refusals import SegmentError, refusal, segment_response
from clm_ingest.segment import DEFAULT_TRACK_EVENTS
from clm_ingest.settings import IngestSettings
from clm_web.auth import KeyVerifier
from clm_web.health import Check, health_router
from clm_web.problem import document_problems, install_problem_handlers
from clm_web.prom import instrument, metrics_router
from clm_web.request_limits import install_request_limits
from clm_web.serve import telemetry

log = logging.getLogger(__name__)

HOT_PATHS = {"/v1/events": events.accept_one, "/v1/events/batch": events.accept_batch}


def _secret_cache(settings: IngestSettings, engine: Any) -> SecretCache | None:
    try:
        box = cipher(settings)
    except SecretsKeyMissing as exc:
        log.warning("webhooks disabled: %s", exc)
        return None
    return SecretCache(engine, box, ttl_s=settings.auth_cache_s)


def create_app(settings: IngestSettings | None = None, *, hot_routes: bool = True) -> FastAPI:
    """The ingest app. ``hot_routes=False`` leaves ``/v1/events[/batch]`` to FastAPI's router
    (the tests compare both ways of serving them)."""
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database.url, pool_size=settings.database.pool_size, app_name="clm-ingest"
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
            verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_s),
            publisher=publisher,
            limiter=(
                TokenBuckets(
                    rate=settings.ingest_rate_limit_per_s,
                    burst=settings.ingest_rate_limit_burst,
                )
                if settings.ingest_rate_limit_per_s > 0
                else None
            ),
            secrets=_secret_cache(settings, engine),
            track_events={**DEFAULT_TRACK_EVENTS, **settings.ingest_segment_events},
        )
        try:
            yield
        finally:
            await publisher.close()
            await engine.dispose()

    app = FastAPI(
        title="CLM Stream ingest",
        version="0.1.0",
        description=(
            "Touchpoint events in; Kafka out. 2xx only after the broker acknowledged. "
            "Our own contract (`/v1/events`), Segment's Tracking API, and signed webhooks."
        ),
        lifespan=lifespan,
        telemetry=telemetry(settings),
    )
    install_problem_handlers(app)
    install_request_id_logging()

    @app.exception_handler(SegmentError)
    async def _segment(_: Request, exc: SegmentError) -> JSONResponse:
        return segment_response(exc)

    # outermost last: observability sees every answer, the limit applies before inflating;
    # the hot routes innermost, right after the body is inflated
    hot: dict[str, HotRoute] = {}
    if hot_routes:
        app.add_middleware(HotRoutesMiddleware, routes=hot)
    app.add_middleware(GzipRequestMiddleware, max_bytes=settings.ingest_max_body_bytes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.ingest_max_body_bytes)
    # per address and on refused keys (per key: the events limit of its routes), before any
    # body is read
    install_request_limits(app, settings, refusal)
    app.add_middleware(ObservabilityMiddleware)

    def checks() -> Mapping[str, Check]:
        state: State = app.state.clm
        return {
            "postgres": lambda: ping(state.engine),
            "kafka": lambda: kafka_reachable(settings.kafka.bootstrap),
        }

    app.include_router(health_router(checks))
    app.include_router(metrics_router())
    instrument(app)
    app.include_router(events.router)
    app.include_router(segment.router)
    app.include_router(webhooks.router)
    for route in events.router.routes:  # the app's own list holds included routers, not routes
        if isinstance(route, APIRoute) and route.path in HOT_PATHS:
            hot[route.path] = HotRoute(HOT_PATHS[route.path], route)
    if hot_routes and hot.keys() != HOT_PATHS.keys():
        raise RuntimeError(f"hot routes without their FastAPI route: {HOT_PATHS.keys() - hot}")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = doc.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            event = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(event.pop("$defs", {}))
            schemas["Event"] = event
            components["securitySchemes"] = {
                "segmentBasic": {"type": "http", "scheme": "basic"},
            }
            for item in doc["paths"].values():  # webhooks: the provider's signature instead
                for operation in item.values():
                    if "webhooks" in operation.get("tags", []):
                        operation["security"] = []
            app.openapi_schema = document_problems(doc, bearer="writeKey")
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
