"""The stage engine: consumes touchpoints, keeps stages in Postgres, serves the read API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from clm_domain.pseudonyms import pseudonyms_from
from clm_domain.rules import LifecycleRules, load_rules
from clm_infra import webhook_secrets
from clm_infra.consumer import (
    BatchConsumer,
    BatchPolicy,
    PoisonLimitExceeded,
    run_batch_consumer,
    stalled_loops,
)
from clm_infra.db import create_engine, ping
from clm_infra.kafka import kafka_reachable, make_producer
from clm_infra.webhook_urls import UrlPolicy
from clm_infra.worker import Supervisor
from clm_stage_engine import at_rest
from clm_stage_engine.api import customers, merge, webhooks
from clm_stage_engine.deps import State
from clm_stage_engine.handler import EventsHandler
from clm_stage_engine.hot_read import HotReadMiddleware
from clm_stage_engine.known import KnownStates
from clm_stage_engine.relay import OutboxGate, OutboxRelay, PayloadCache
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.sweeper import sweep_forever
from clm_stage_engine.webhooks import Dispatcher
from clm_web.auth import KeyVerifier
from clm_web.health import Check, health_router
from clm_web.problem import install_problem_handlers, install_problem_openapi
from clm_web.prom import instrument, metrics_router
from clm_web.request_limits import install_request_limits
from clm_web.serve import telemetry

log = logging.getLogger(__name__)

#: Postgres caches a prepared statement's generic plan after a few runs, made from the
#: tables' statistics of that moment. One made while the event log was small (a fresh
#: database) hashed or scanned the whole log on every batch as it grew, until the next ANALYZE
#: replaced it (34 ms a batch in the e2e bench). The lanes' connections plan every statement for
#: its arguments and the tables' current sizes instead (a fraction of a millisecond).
FRESH_PLANS = ("SET plan_cache_mode = force_custom_plan",)


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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the keys of what is kept at rest: a process without them (prod) does not start
        pseudonyms = pseudonyms_from(
            settings.pseudonym_key.get_secret_value() if settings.pseudonym_key else None,
            settings.env,
        )
        secrets_box = webhook_secrets.cipher(settings)
        engine = create_engine(
            settings.database.url,
            pool_size=settings.database.pool_size,
            app_name="clm-stage-engine",
        )
        state = State(
            settings=settings,
            engine=engine,
            verifier=KeyVerifier(engine, ttl_s=settings.auth_cache_s),
            rules=rules,
            pseudonyms=pseudonyms,
            secrets_box=secrets_box,
            url_policy=url_policy,
        )
        app.state.clm = state
        if settings.stage_engine_role == "all":
            await _upgrade_at_rest(state)
        stopping = asyncio.Event()
        current: dict[str, BatchConsumer | OutboxRelay | Dispatcher] = {}

        # The lanes: consumer loops side by side, each a member of the group with partitions
        # of its own, sharing the rows this process wrote (a customer moves between lanes
        # only with its partition, and every row's version is checked when written back).
        written = PayloadCache()  # the outbox rows the lanes committed, for the relay
        handler = EventsHandler(
            settings.topics.lifecycle,
            rules,
            KnownStates(settings.stage_engine_known_states),
            written,
            pseudonyms,
        )
        policy = BatchPolicy(
            max_records=settings.batch.records,
            max_wait_s=settings.batch.wait_s,
            fill_s=settings.batch.fill_s,
            idle_recheck_s=settings.stage_engine_idle_recheck_s,
            session=FRESH_PLANS,
            gate=OutboxGate(engine, settings.stage_engine_outbox_max_backlog),
            stall_s=settings.stage_engine_stall_s,
        )

        # One stop for all the lanes: a lane at its poison limit stops its siblings too (its
        # partitions would otherwise move to them and pour the rest into the DLQ).
        lanes_stop = asyncio.Event()

        def consumer(lane: int) -> Callable[[], Awaitable[None]]:
            def register(loop: BatchConsumer | None) -> None:
                if loop is None:
                    current.pop(f"consumer {lane}", None)
                else:
                    current[f"consumer {lane}"] = loop

            async def consume() -> None:
                if lanes_stop.is_set() and not stopping.is_set():
                    raise PoisonLimitExceeded(f"lane {lane}: a sibling lane hit the poison limit")
                await run_batch_consumer(
                    settings,
                    engine,
                    name=f"clm-stage-engine-{lane}",  # the client id sorts the group's members
                    topic=settings.topics.events,
                    group_id=settings.stage_engine_group,
                    handler=handler,
                    policy=policy,
                    register=register,
                    stopping=stopping,
                    lanes_stop=lanes_stop,
                )
                if lanes_stop.is_set() and not stopping.is_set():
                    raise PoisonLimitExceeded(f"lane {lane}: a sibling lane hit the poison limit")

            return consume

        async def relay() -> None:
            producer = make_producer(settings, client_id="clm-stage-engine-relay")
            try:
                await producer.start()
                outbox_relay = OutboxRelay(
                    engine,
                    producer,
                    poll_s=settings.stage_engine_outbox_poll_s,
                    cache=written,
                )
                current["relay"] = outbox_relay
                if stopping.is_set():
                    return
                await outbox_relay.run()
            finally:
                current.pop("relay", None)
                with contextlib.suppress(Exception):
                    await producer.stop()

        async def sweep() -> None:
            await sweep_forever(
                engine,
                rules,
                lambda: datetime.now(UTC),
                lifecycle_topic=settings.topics.lifecycle,
                group_id=settings.stage_engine_group,
                every_s=settings.stage_engine_sweep_s,
                batch=settings.stage_engine_sweep_batch,
                stopping=stopping,
            )

        async def dispatch() -> None:
            dispatcher = Dispatcher(
                engine,
                timeout_s=settings.webhooks.timeout_s,
                max_attempts=settings.webhooks.max_attempts,
                poll_s=settings.webhooks.poll_s,
                concurrency=settings.webhooks.concurrency,
                url_policy=url_policy,
                secrets_box=secrets_box,
            )
            current["dispatcher"] = dispatcher
            try:
                if not stopping.is_set():
                    await dispatcher.run()
            finally:
                current.pop("dispatcher", None)

        supervisors = (
            [
                *(
                    Supervisor(
                        f"stage-engine consumer {lane}",
                        consumer(lane),
                        fatal=(PoisonLimitExceeded,),
                    )
                    for lane in range(settings.stage_engine_lanes)
                ),
                Supervisor("outbox relay", relay),
                Supervisor("sweeper", sweep),
                Supervisor("webhook dispatcher", dispatch),
            ]
            if settings.stage_engine_role == "all"
            else []  # an API replica: the workers run in the "all" processes
        )
        app.state.supervisors = supervisors
        app.state.workers = current
        tasks = [asyncio.create_task(s.run(), name=s.name) for s in supervisors]
        try:
            yield
        finally:
            stopping.set()
            for s in supervisors:
                s.stop()
            for worker in list(current.values()):
                worker.stop()
            _, pending = await asyncio.wait(tasks, timeout=15) if tasks else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await engine.dispose()

    app = FastAPI(
        title="CLM Stream stage engine",
        version="0.1.0",
        description="Each customer's lifecycle stage, history and facts.",
        lifespan=lifespan,
        telemetry=telemetry(settings),
    )
    install_problem_handlers(app)
    install_problem_openapi(app, bearer="key")  # read token or admin key, by route
    read_route: list[Any] = []  # the FastAPI route the hot read stands in for, once it exists
    if hot_read:  # innermost: the request metrics count it
        app.add_middleware(HotReadMiddleware, route=read_route)

    def checks() -> Mapping[str, Check]:
        state: State = app.state.clm

        async def consumer_alive() -> bool | str:
            if any(s.failed is not None for s in app.state.supervisors):
                return False
            lanes = {
                name: w for name, w in app.state.workers.items() if isinstance(w, BatchConsumer)
            }
            return stalled_loops(lanes) or True

        if settings.stage_engine_role == "api":  # answers from Postgres alone
            return {"postgres": lambda: ping(state.engine)}
        return {
            "postgres": lambda: ping(state.engine),
            "kafka": lambda: kafka_reachable(settings.kafka.bootstrap),
            "consumer": consumer_alive,
        }

    app.include_router(health_router(checks))
    app.include_router(metrics_router())
    install_request_limits(app, settings)  # inside the request metrics: they count 429s
    instrument(app)
    app.include_router(customers.router)
    read_route.extend(
        r
        for r in customers.router.routes
        if isinstance(r, APIRoute)
        and r.path == "/v1/customers/{customer_id}"
        and "GET" in (r.methods or ())
    )
    if hot_read and len(read_route) != 1:
        raise RuntimeError("the hot read without its FastAPI route")
    app.include_router(merge.router)
    app.include_router(webhooks.router)
    return app


async def _upgrade_at_rest(state: State) -> None:
    """Tombstones and secrets of older versions upgraded before the lanes start (so no batch
    misses a tombstone); a database without the schema yet is left for the next start."""
    try:
        await at_rest.upgrade(state.engine, state.pseudonyms, state.secrets_box)
    except Exception:
        log.warning("tombstones and secrets not upgraded at start", exc_info=True)
