"""The stage engine's HTTP side: the FastAPI app, its routers and middlewares, health; the
lifespan opens the database and starts the workers (:mod:`clm_stage_engine.workers`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from clm_domain.pseudonyms import pseudonyms_from
from clm_domain.rules import LifecycleRules, load_rules
from clm_infra import webhook_secrets
from clm_infra.db import ping
from clm_infra.privacy.ciphers import master_keys
from clm_infra.webhook_urls import UrlPolicy
from clm_stage_engine import at_rest
from clm_stage_engine.api import (
    customer_events,
    customer_export,
    customers,
    merge,
    models,
    segments,
    webhooks,
)
from clm_stage_engine.deps import State
from clm_stage_engine.hot_read import HotReadMiddleware
from clm_stage_engine.model_cache import ModelCache
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.workers import build_workers
from clm_web.auth import KeyVerifier
from clm_web.health import Check, health_router, service_checks
from clm_web.lifespan import database, workers_running
from clm_web.problem import install_problem_handlers, install_problem_openapi
from clm_web.prom import instrument, metrics_router
from clm_web.request_limits import install_request_limits
from clm_web.serve import telemetry

log = logging.getLogger(__name__)

READ_PATH = "/v1/customers/{customer_id}"


def create_app(
    settings: StageEngineSettings | None = None,
    rules: LifecycleRules | None = None,
    *,
    hot_read: bool = True,
) -> FastAPI:
    """The stage engine app; the rule file is loaded (and refused if bad) here, at start.
    ``hot_read=False`` leaves ``GET /v1/customers/{id}`` to FastAPI's router alone
    (:mod:`clm_stage_engine.hot_read`)."""
    settings = settings or StageEngineSettings()
    rules = rules or load_rules(settings.stage_engine_rules_path)
    url_policy = UrlPolicy.of(settings.webhooks.allow_insecure, settings.webhooks.allowed_hosts)
    app = FastAPI(
        title="CLM Stream stage engine",
        version="0.1.0",
        description="Each customer's lifecycle stage, history and facts.",
        lifespan=_lifespan(settings, rules, url_policy),
        telemetry=telemetry(settings),
    )
    install_problem_handlers(app)
    install_problem_openapi(app, bearer="key")  # read token or admin key, by route
    read_route: list[Any] = []  # the FastAPI route the hot read stands in for, once it exists
    if hot_read:  # innermost: the request metrics count it
        app.add_middleware(HotReadMiddleware, route=read_route)
    app.include_router(health_router(lambda: _checks(app, settings)))
    app.include_router(metrics_router())
    install_request_limits(app, settings)  # inside the request metrics: they count 429s
    instrument(app)
    app.include_router(customers.router)
    read_route.extend(
        r
        for r in customers.router.routes
        if isinstance(r, APIRoute) and r.path == READ_PATH and "GET" in (r.methods or ())
    )
    if hot_read and len(read_route) != 1:
        raise RuntimeError("the hot read without its FastAPI route")
    app.include_router(customer_events.router)
    app.include_router(customer_export.router)
    app.include_router(merge.router)
    app.include_router(webhooks.router)
    app.include_router(models.router)
    app.include_router(segments.router)
    return app


def _lifespan(settings: StageEngineSettings, rules: LifecycleRules, url_policy: UrlPolicy) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the keys of what is kept at rest: a process without them (prod) does not start
        pseudonyms = pseudonyms_from(
            settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else None,
            settings.env,
        )
        secrets_box = webhook_secrets.cipher(settings)
        masters = master_keys(settings)
        async with database(settings, "clm-stage-engine") as engine:
            state = State(
                settings=settings,
                engine=engine,
                verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_s),
                rules=rules,
                pseudonyms=pseudonyms,
                secrets_box=secrets_box,
                url_policy=url_policy,
                models=ModelCache(engine, settings.model.reload_s),
                masters=masters,
            )
            app.state.clm = state
            if settings.stage_engine_role == "all":
                await _upgrade_at_rest(state)
            async with workers_running(app, build_workers(state)):
                yield

    return lifespan


def _checks(app: FastAPI, settings: StageEngineSettings) -> Mapping[str, Check]:
    state: State = app.state.clm
    if settings.stage_engine_role == "api":  # answers from Postgres alone
        return {"postgres": lambda: ping(state.engine)}
    return service_checks(state.engine, settings, lambda: app.state.workers)


async def _upgrade_at_rest(state: State) -> None:
    """Tombstones and secrets of older versions upgraded before the lanes start (so no batch
    misses a tombstone); a database without the schema yet is left for the next start."""
    try:
        await at_rest.upgrade(state.engine, state.pseudonyms, state.secrets_box)
    except Exception:
        log.warning("tombstones and secrets not upgraded at start", exc_info=True)
