"""Prometheus helpers: the ``/metrics`` route (process metrics come with the default registry)
and HTTP request metrics by route template and status (bounded labels: no ids, no raw paths)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "clm_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "clm_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", summary="Prometheus text exposition", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


class _RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # the labelled children, looked up once: labels() costs a lock and a tuple per call,
        # and the label values are bounded (methods, route templates, statuses)
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

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
            key = (method, template, str(status[0]))
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = REQUESTS.labels(*key)
            count.inc()
            duration = self._durations.get(key[:2])
            if duration is None:
                duration = self._durations[key[:2]] = REQUEST_SECONDS.labels(method, template)
            duration.observe(time.perf_counter() - started)


def instrument(app: FastAPI) -> None:
    """Count every request by method, route template and status (``clm_http_requests_total``)."""
    app.add_middleware(_RequestMetrics)
