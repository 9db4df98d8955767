"""The busiest routes served without FastAPI's router: ``POST /v1/events`` and ``/v1/events/batch``.

FastAPI's routing and dependency machinery cost these routes more than their own work
(``docs/performance.md``, "The ingest"). This ASGI middleware sits inside our own middlewares
(metrics, request id, body limit, gzip, so they all still apply) and answers those two routes
itself with the very functions their FastAPI endpoints call
(:func:`clm_ingest.api.events.accept_one` / ``accept_batch``). The FastAPI routes stay: they
document the API (OpenAPI) and serve when the app is built with ``hot_routes=False``. Anything
else — another method, another path — goes on to FastAPI untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from clm_infra.db import unavailable
from clm_ingest.deps import Caller, State, authorize_writer
from clm_web.asgi import header, send_json
from clm_web.problem import ProblemError, database_unavailable, raised_problem

Accept = Callable[[State, Caller, bytes], Awaitable[bytes]]


class HotRoute:
    """One route's handler and the FastAPI route it stands in for (for the metrics' label)."""

    __slots__ = ("accept", "route")

    def __init__(self, accept: Accept, route: Any) -> None:
        self.accept = accept
        self.route = route


def hot_routes_of(router: APIRouter, accepts: Mapping[str, Accept]) -> dict[str, HotRoute]:
    """``accepts`` (path → handler) paired with the router's FastAPI routes of those paths."""
    found = {
        route.path: HotRoute(accepts[route.path], route)
        for route in router.routes
        if isinstance(route, APIRoute) and route.path in accepts
    }
    if found.keys() != accepts.keys():
        raise RuntimeError(f"hot routes without their FastAPI route: {accepts.keys() - found}")
    return found


class HotRoutesMiddleware:
    def __init__(self, app: ASGIApp, routes: Mapping[str, HotRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if hot is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = hot.route  # the label clm_http_requests_total counts it under
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before it finished sending
        state: State = scope["app"].state.clm
        try:
            caller = await authorize_writer(
                state, (header(scope, b"authorization") or b"").decode("latin-1")
            )
            answer = await hot.accept(state, caller, body)
        except ProblemError as exc:
            await raised_problem(exc, scope["path"])(scope, receive, send)
            return
        except Exception as exc:
            # what the app's exception handlers do on the routed path: Postgres away (the key
            # lookup) is a 503; anything else goes on to the app's 500 handler
            if not unavailable(exc):
                raise
            await database_unavailable(exc, scope["path"])(scope, receive, send)
            return
        await send_json(send, 202, answer)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
