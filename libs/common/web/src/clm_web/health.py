"""``/healthz`` (the process is alive) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.consumer import BatchConsumer, stalled_loops
from clm_infra.db import ping
from clm_infra.kafka import kafka_reachable
from clm_infra.settings import CommonSettings
from clm_infra.worker import Workers

#: a readiness check: True (ok), False (down), or what is wrong (not ready, and why)
Check = Callable[[], Awaitable[bool | str]]


def _state(result: object) -> str:
    if result is True:
        return "ok"
    if isinstance(result, str) and result:
        return result
    return "down"


def health_router(checks: Callable[[], Mapping[str, Check]]) -> APIRouter:
    """Health endpoints; ``checks`` gives the named readiness checks of the running app."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: Kafka and Postgres answer, the consumers move",
        responses={503: {"description": "a dependency is down, or a consumer is stalled"}},
    )
    async def readyz() -> JSONResponse:
        named = dict(checks())
        results = await asyncio.gather(
            *(asyncio.wait_for(check(), timeout=3.0) for check in named.values()),
            return_exceptions=True,
        )
        status = {name: _state(result) for name, result in zip(named, results, strict=True)}
        ready = all(v == "ok" for v in status.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": status},
            status_code=200 if ready else 503,
        )

    return router


def workers_check(workers: Callable[[], Workers]) -> Check:
    """Readiness of a process's consumer loops: down once a supervisor gave up for good,
    not ready (naming them) while a loop has stalled partitions."""

    async def check() -> bool | str:
        current = workers()
        if current.failed:
            return False
        loops = {n: w for n, w in current.running.items() if isinstance(w, BatchConsumer)}
        return stalled_loops(loops) or True

    return check


def service_checks(
    engine: AsyncEngine, settings: CommonSettings, workers: Callable[[], Workers] | None = None
) -> dict[str, Check]:
    """A service's readiness: Postgres and Kafka answer and, with ``workers``, its consumer
    loops neither gave up nor stalled (:func:`workers_check`)."""
    checks: dict[str, Check] = {
        "postgres": lambda: ping(engine),
        "kafka": lambda: kafka_reachable(settings.kafka.bootstrap),
    }
    if workers is not None:
        checks["consumer"] = workers_check(workers)
    return checks
