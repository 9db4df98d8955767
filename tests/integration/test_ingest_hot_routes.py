"""``/v1/events`` and ``/v1/events/batch`` answer the same through the hot-route middleware as
through FastAPI's router (``create_app(hot_routes=False)``): every status, header that matters
and body, for good and bad requests, on the real broker and Postgres."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from tests.factories import event_doc
from tests.integration.conftest import answer_of, read_topic
from tests.integration.ingest_server import ingest_client
from tests.keys import READ, WRITE

JSON = {**WRITE, "Content-Type": "application/json"}

GOOD = event_doc("purchase", customer_id="cust-hot", amount="12.50")
BATCH = {"events": [event_doc("site_visit", customer_id="cust-hot"), event_doc("review", rating=9)]}

# (name, method, path, headers, body)
CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("one event", "POST", "/v1/events", JSON, orjson.dumps(GOOD)),
    (
        "gzip",
        "POST",
        "/v1/events",
        {**JSON, "Content-Encoding": "gzip"},
        gzip.compress(orjson.dumps(GOOD)),
    ),
    ("not JSON", "POST", "/v1/events", JSON, b"{nope"),
    ("no key", "POST", "/v1/events", {"Content-Type": "application/json"}, orjson.dumps(GOOD)),
    ("unknown key", "POST", "/v1/events", {"Authorization": "Bearer nope"}, orjson.dumps(GOOD)),
    ("a read key", "POST", "/v1/events", READ, b"{}"),
    ("invalid", "POST", "/v1/events", JSON, orjson.dumps(event_doc("nps_response", score=11))),
    ("other source", "POST", "/v1/events", JSON, orjson.dumps(event_doc(source="elsewhere"))),
    ("too big", "POST", "/v1/events", JSON, b" " * 70_000),
    ("batch", "POST", "/v1/events/batch", JSON, orjson.dumps(BATCH)),
    ("not a batch", "POST", "/v1/events/batch", JSON, orjson.dumps({"events": []})),
    (
        "batch over the limit",
        "POST",
        "/v1/events/batch",
        JSON,
        orjson.dumps({"events": [GOOD] * 501}),
    ),
    ("GET", "GET", "/v1/events", WRITE, b""),
]


@pytest.fixture
async def both(common: CommonSettings) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    settings = IngestSettings(ingest_max_body_bytes=64 * 1024)
    async with (
        ingest_client(settings, hot_routes=True) as hot,
        ingest_client(settings, hot_routes=False) as routed,
    ):
        yield hot, routed


@pytest.mark.parametrize(
    ("name", "method", "path", "headers", "body"), CASES, ids=[c[0] for c in CASES]
)
async def test_the_hot_routes_answer_as_the_router_does(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
    name: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    hot, routed = both
    answers = [
        answer_of(await client.request(method, path, headers=headers, content=body), "retry-after")
        for client in (hot, routed)
    ]
    assert answers[0] == answers[1]
    assert (
        "x-request-id" in (await hot.request(method, path, headers=headers, content=body)).headers
    )


async def test_a_hot_request_is_published_and_counted_under_its_route(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], common: CommonSettings
) -> None:
    hot, _ = both
    doc = event_doc("signup", customer_id="cust-hot-2")
    response = await hot.post("/v1/events", content=orjson.dumps(doc), headers=JSON)
    assert response.status_code == 202, response.text
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=1, timeout=5)
    assert [(r.key, orjson.loads(r.value)["event_id"]) for r in records] == [
        (b"cust-hot-2", doc["event_id"])
    ]
    metrics = (await hot.get("/metrics")).text
    assert 'clm_http_requests_total{method="POST",route="/v1/events",status="202"}' in metrics
