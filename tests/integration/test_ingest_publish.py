"""The ingest against the real broker: what it publishes, and what it refuses to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from clm_domain.events import parse_event_json
from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from tests.factories import event_doc
from tests.integration.conftest import read_topic
from tests.integration.ingest_server import ingest_client
from tests.keys import READ, WRITE, WRITE_KEY


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with ingest_client(IngestSettings(ingest_max_body_bytes=4096)) as c:
        yield c


async def test_an_accepted_event_is_on_the_topic_keyed_by_customer(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    doc = event_doc("purchase", customer_id="cust-7", source=None, amount="12.50")
    response = await client.post("/v1/events", json=doc, headers=WRITE)
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": doc["event_id"], "status": "accepted"}

    (record,) = await read_topic(common.kafka.bootstrap, common.topics.events, expect=1)
    assert record.key == b"cust-7"
    headers = dict(record.headers)
    assert headers["schema_version"] == b"1"
    assert headers["source"] == b"shop"
    assert headers["type"] == b"purchase"
    event = parse_event_json(record.value)
    assert event.event_id == doc["event_id"]
    assert event.source == "shop"
    assert orjson.loads(record.value)["properties"]["amount"] == "12.50"


async def test_generated_event_id_is_returned(client: httpx.AsyncClient) -> None:
    doc = event_doc("site_visit")
    del doc["event_id"]
    response = await client.post("/v1/events", json=doc, headers=WRITE)
    assert response.status_code == 202
    assert len(response.json()["event_id"]) == 36


async def test_an_invalid_event_is_a_problem_naming_the_field_and_nothing_is_published(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    doc = event_doc("purchase", amount="-5", currency="XXQ")
    response = await client.post("/v1/events", json=doc, headers=WRITE)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert {e["field"] for e in body["errors"]} == {"properties.amount", "properties.currency"}
    good = await client.post("/v1/events", json=event_doc("site_visit"), headers=WRITE)
    assert good.status_code == 202
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2, timeout=3)
    assert [dict(r.headers)["type"] for r in records] == [b"site_visit"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": f"Basic {WRITE_KEY}"}, 401),
        (READ, 403),
    ],
)
async def test_keys_are_required(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await client.post("/v1/events", json=event_doc(), headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


async def test_bad_json_oversized_bodies_and_foreign_sources_are_refused(
    client: httpx.AsyncClient,
) -> None:
    bad = await client.post("/v1/events", content=b"{not json", headers=WRITE)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "body"
    big = event_doc("review", text="x" * 5000)
    too_big = await client.post("/v1/events", json=big, headers=WRITE)
    assert too_big.status_code == 413
    foreign = await client.post("/v1/events", json=event_doc(source="other"), headers=WRITE)
    assert foreign.status_code == 403
    assert foreign.json()["errors"][0]["field"] == "source"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok"}
