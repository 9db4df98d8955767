"""The batch endpoint, limits, gzip, rate limit, metrics and request ids, on the real broker."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from tests.factories import event_doc
from tests.integration.conftest import read_topic
from tests.integration.ingest_server import ingest_client
from tests.keys import WRITE


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with ingest_client(IngestSettings(ingest_max_body_bytes=64 * 1024)) as c:
        yield c


async def test_a_batch_publishes_the_valid_events_and_lists_the_refused_by_index(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    good_a = event_doc("purchase", customer_id="cust-a", amount="10.00")
    bad = event_doc("review", rating=9)
    good_b = {**event_doc("site_visit", customer_id=None), "anonymous_id": "anon-b"}
    foreign = event_doc("signup", source="elsewhere")
    response = await client.post(
        "/v1/events/batch", json={"events": [good_a, bad, good_b, foreign]}, headers=WRITE
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["events"] == [
        {"index": 0, "event_id": good_a["event_id"]},
        {"index": 2, "event_id": good_b["event_id"]},
    ]
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "less_than_equal"),
        (3, "source_mismatch"),
    ]
    assert body["rejected"][0]["errors"][0]["field"] == "properties.rating"

    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=3, timeout=5)
    by_id = {orjson.loads(r.value)["event_id"]: r for r in records}
    assert set(by_id) == {good_a["event_id"], good_b["event_id"]}
    assert by_id[good_a["event_id"]].key == b"cust-a"
    assert by_id[good_b["event_id"]].key == b"anon-b"
    assert dict(by_id[good_b["event_id"]].headers) == {
        "schema_version": b"1",
        "source": b"shop",
        "type": b"site_visit",
    }


async def test_an_all_invalid_batch_is_422_naming_each_field_and_publishes_nothing(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    response = await client.post(
        "/v1/events/batch",
        json={
            "events": [event_doc("nps_response", score=11), event_doc("purchase", currency="XYZ")]
        },
        headers=WRITE,
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in response.json()["errors"]} == {
        "events[0].properties.score",
        "events[1].properties.currency",
    }
    assert await read_topic(common.kafka.bootstrap, common.topics.events, expect=1, timeout=2) == []


async def test_batch_limits(client: httpx.AsyncClient) -> None:
    small = {"customer_id": "c", "type": "signup", "properties": {}}
    too_many = await client.post("/v1/events/batch", json={"events": [small] * 501}, headers=WRITE)
    assert too_many.status_code == 413
    assert too_many.json()["errors"][0]["field"] == "events"
    empty = await client.post("/v1/events/batch", json={"events": []}, headers=WRITE)
    assert empty.status_code == 422
    not_batch = await client.post("/v1/events/batch", json=[small], headers=WRITE)
    assert not_batch.status_code == 422
    huge = await client.post(
        "/v1/events/batch",
        json={"events": [event_doc("custom", blob="x" * 10_000) for _ in range(7)]},
        headers=WRITE,
    )
    assert huge.status_code == 413


async def test_gzip_bodies_are_accepted_and_bombs_refused(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    doc = event_doc("signup", customer_id="gz")
    zipped = gzip.compress(orjson.dumps(doc))
    response = await client.post(
        "/v1/events",
        content=zipped,
        headers={**WRITE, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    deflated = await client.post(
        "/v1/events",
        content=zlib.compress(orjson.dumps(event_doc("signup", customer_id="df"))),
        headers={**WRITE, "Content-Encoding": "deflate"},
    )
    assert deflated.status_code == 202, deflated.text
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2)
    assert sorted(r.key for r in records) == [b"df", b"gz"]

    bomb = gzip.compress(b"[" + b" " * 10_000_000 + b"]")  # ~10 KB that inflates to 10 MB
    assert len(bomb) < 64 * 1024
    refused = await client.post(
        "/v1/events", content=bomb, headers={**WRITE, "Content-Encoding": "gzip"}
    )
    assert refused.status_code == 413
    broken = await client.post(
        "/v1/events", content=b"not gzip", headers={**WRITE, "Content-Encoding": "gzip"}
    )
    assert broken.status_code == 400
    brotli = await client.post(
        "/v1/events", content=b"{}", headers={**WRITE, "Content-Encoding": "br"}
    )
    assert brotli.status_code == 415


async def test_the_rate_limit_answers_429_with_retry_after(common: CommonSettings) -> None:
    settings = IngestSettings(ingest_rate_limit_per_s=1, ingest_rate_limit_burst=3)
    async with ingest_client(settings) as client:
        statuses = []
        for _ in range(4):
            response = await client.post("/v1/events", json=event_doc("signup"), headers=WRITE)
            statuses.append(response.status_code)
        assert statuses == [202, 202, 202, 429]
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        batch = await client.post(
            "/v1/events/batch", json={"events": [event_doc("signup")] * 2}, headers=WRITE
        )
        assert batch.status_code == 429
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=4, timeout=3)
    assert len(records) == 3


async def test_metrics_and_request_ids(client: httpx.AsyncClient) -> None:
    ok = await client.post(
        "/v1/events", json=event_doc("review"), headers={**WRITE, "X-Request-ID": "req-123"}
    )
    assert ok.headers["x-request-id"] == "req-123"
    bad = await client.post("/v1/events", json=event_doc("review", rating=0), headers=WRITE)
    assert len(bad.headers["x-request-id"]) == 32
    await client.post("/v1/events/batch", json={"events": [event_doc("review")] * 3}, headers=WRITE)
    text = (await client.get("/metrics")).text
    assert 'clm_http_requests_total{method="POST",route="/v1/events",status="202"}' in text
    assert 'clm_http_requests_total{method="POST",route="/v1/events",status="422"}' in text
    assert 'clm_ingest_events_accepted_total{route="/v1/events",type="review"}' in text
    assert (
        'clm_ingest_events_rejected_total{reason="greater_than_equal",route="/v1/events",type="review"}'
        in text
    )
    assert 'clm_ingest_batch_size_bucket{le="5.0",route="/v1/events/batch"}' in text
    assert "clm_ingest_publish_duration_seconds_count" in text
