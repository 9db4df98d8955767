"""``GET /v1/customers/{id}`` answered without FastAPI's router, when the request is plain.

The stage-by-customer read is the API's hot path, and most of its cost was FastAPI's and
Starlette's layers rather than reading and serializing the customer (``docs/performance.md``,
*The hot read*). This ASGI middleware sits inside the app's own middlewares (request metrics
still count it, under the route's template) and answers the read itself with the functions the
FastAPI endpoint calls, but only when the request is plain: a well-formed id and a cached read
key. Anything else — a bad id, a missing, unknown or wrong-kind key, another path or method —
goes on to FastAPI untouched, which answers with its own validation and problem documents; so
the two paths cannot disagree on an error. The FastAPI route stays: it documents the API and
serves with ``hot_read=False``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from clm_domain.events import TEXT_PATTERN
from clm_infra.db import unavailable
from clm_stage_engine.api.customers import customer_body, not_found
from clm_stage_engine.deps import State
from clm_stage_engine.repository import segment_members
from clm_web.asgi import header, send_json
from clm_web.auth import bearer_from_header
from clm_web.problem import ProblemError, database_unavailable, raised_problem

PREFIX = "/v1/customers/"
_ID = re.compile(TEXT_PATTERN)


class HotReadMiddleware:
    def __init__(self, app: ASGIApp, route: list[Any]) -> None:
        self.app = app
        self.route = route  # filled once the routes exist: [the FastAPI route]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"] if scope["type"] == "http" else ""
        customer_id = path[len(PREFIX) :] if path.startswith(PREFIX) else ""
        state: State | None = getattr(scope["app"].state, "clm", None) if customer_id else None
        if (
            state is None
            or scope["method"] != "GET"
            or "/" in customer_id
            or len(customer_id) > 200
            or not _ID.match(customer_id)
            or not await _reader(state, scope)
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route[0]  # the label clm_http_requests_total counts it under
        try:
            found = await segment_members.read_customer_with_segments(state.engine, customer_id)
        except Exception as exc:
            if not unavailable(exc):  # as the app's handlers: anything else is a 500
                raise
            await database_unavailable(exc, path)(scope, receive, send)
            return
        if found is None:
            await raised_problem(not_found(customer_id), path)(scope, receive, send)
            return
        body = orjson.dumps(await customer_body(state, *found))
        await send_json(send, 200, body)


async def _reader(state: State, scope: Scope) -> bool:
    """Whether the request carries a known read key (any doubt: let FastAPI decide)."""
    given = (header(scope, b"authorization") or b"").decode("latin-1")
    try:
        principal = await state.verifier.verify(bearer_from_header(given))
    except ProblemError:
        return False
    return principal is not None and principal.kind == "read"
