"""Prometheus helpers: the ``/metrics`` route (process metrics come with the default registry)
and HTTP request metrics by route template and status (bounded labels: no ids, no raw paths)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

M = TypeVar("M", Counter, Histogram)

REQUESTS = Counter(
    "clm_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "clm_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def children(metric: M) -> Callable[..., M]:
    """``metric.labels(*values)``, each child looked up once and kept: ``labels()`` takes a
    lock and builds tuples on every call, a cost per request on hot paths. Only for labels
    whose values are bounded (the children are never dropped)."""
    known: dict[tuple[str, ...], M] = {}

    def child(*values: str) -> M:
        found = known.get(values)
        if found is None:
            found = known[values] = metric.labels(*values)
        return found

    return child


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", summary="Prometheus text exposition", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


class _RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._counts = children(REQUESTS)
        self._durations = children(REQUEST_SECONDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            template = str(getattr(route, "path", "unmatched"))
            method = str(scope.get("method", ""))
            self._counts(method, template, str(status[0])).inc()
            self._durations(method, template).observe(time.perf_counter() - started)


def instrument(app: FastAPI) -> None:
    """Count every request by method, route template and status (``clm_http_requests_total``)."""
    app.add_middleware(_RequestMetrics)
