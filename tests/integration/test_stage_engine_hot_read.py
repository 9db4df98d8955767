"""``GET /v1/customers/{id}`` answers the same through the hot-read middleware as through
FastAPI's router (``create_app(hot_read=False)``): status, the headers that matter and body,
for plain and odd requests, on the real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.apps import app_client
from tests.integration.conftest import answer_of, eventually, send_events
from tests.keys import READ, WRITE

# (name, method, path, headers)
CASES: list[tuple[str, str, str, dict[str, str]]] = [
    ("a customer", "GET", "/v1/customers/hot-1", READ),
    ("unknown customer", "GET", "/v1/customers/nobody", READ),
    ("an id with a space", "GET", "/v1/customers/hot%20one", READ),
    ("an id with a control character", "GET", "/v1/customers/a%01b", READ),
    ("an id too long", "GET", "/v1/customers/" + "x" * 201, READ),
    ("no key", "GET", "/v1/customers/hot-1", {}),
    ("not bearer", "GET", "/v1/customers/hot-1", {"Authorization": "Basic eDp5"}),
    ("unknown key", "GET", "/v1/customers/hot-1", {"Authorization": "Bearer nope"}),
    ("a write key", "GET", "/v1/customers/hot-1", WRITE),
    ("history", "GET", "/v1/customers/hot-1/history", READ),
    ("the list", "GET", "/v1/customers/", READ),
    ("POST", "POST", "/v1/customers/hot-1", READ),
]


@asynccontextmanager
async def _client(*, hot_read: bool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(StageEngineSettings(), hot_read=hot_read)
    async with app_client(app, "http://engine") as c:
        yield c


@pytest.fixture
async def both(common: CommonSettings) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    await send_events(common, event_doc("purchase", customer_id="hot-1", event_id="hot-p1"))
    async with _client(hot_read=True) as hot, _client(hot_read=False) as routed:

        async def applied() -> bool | None:
            return (
                await routed.get("/v1/customers/hot-1", headers=READ)
            ).status_code == 200 or None

        assert await eventually(applied)
        yield hot, routed


async def test_the_hot_read_answers_as_the_router_does(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    hot, routed = both
    for name, method, path, headers in CASES:
        answers = [
            answer_of(await client.request(method, path, headers=headers), "allow")
            for client in (hot, routed)
        ]
        assert answers[0] == answers[1], name
    found = await hot.get("/v1/customers/hot-1", headers=READ)
    assert found.json()["stage"] == "conversion"
    metrics = (await hot.get("/metrics")).text
    assert (
        'clm_http_requests_total{method="GET",route="/v1/customers/{customer_id}",status="200"}'
        in metrics
    )
