"""The Segment-compatible API on the real broker, and the real segment-analytics-python client."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from segment.analytics.client import Client
from segment.analytics.request import APIError

from clm_infra.settings import CommonSettings
from clm_ingest.app import create_app
from clm_ingest.settings import IngestSettings
from tests.integration.conftest import opened, read_topic
from tests.integration.ingest_server import ingest_client, serving
from tests.keys import READ_TOKEN, WRITE_KEY

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with ingest_client(IngestSettings()) as c:
        yield c


def values(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in records}


async def test_track_with_basic_auth_answers_success_and_publishes_the_event(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    msg = {
        "userId": "u-1",
        "anonymousId": "a-1",
        "messageId": "msg-1",
        "event": "Order Completed",
        "timestamp": "2026-11-23T11:00:00Z",
        "context": {"campaign": {"medium": "email"}},
        "properties": {"order_id": "o-1", "total": 25.5, "currency": "EUR"},
    }
    response = await client.post("/v1/track", json=msg, headers=BASIC)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    (record,) = await read_topic(common.kafka.bootstrap, common.topics.events, expect=1)
    assert record.key == b"u-1"
    assert dict(record.headers)["type"] == b"purchase"
    event = orjson.loads(record.value)
    assert event["event_id"] == "msg-1"
    assert event["source"] == "shop"
    assert event["channel"] == "email"
    assert event["properties"]["amount"] == "25.5"


async def test_the_browser_short_paths_take_text_plain_with_the_key_in_the_body(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    page = {
        "writeKey": WRITE_KEY,
        "anonymousId": "a-2",
        "messageId": "m-p",
        "properties": {"url": "https://s.example/x"},
    }
    batch = {
        "writeKey": WRITE_KEY,
        "batch": [
            {
                "type": "identify",
                "userId": "u-2",
                "anonymousId": "a-2",
                "messageId": "m-i",
                "traits": {"plan": "pro"},
            },
            {"type": "track", "userId": "u-2", "messageId": "m-t", "event": "Wishlist Shared"},
        ],
    }
    for path, body in (("/v1/p", page), ("/v1/b", batch)):
        response = await client.post(
            path, content=orjson.dumps(body), headers={"Content-Type": "text/plain"}
        )
        assert response.status_code == 200, response.text
    found = values(await read_topic(common.kafka.bootstrap, common.topics.events, expect=3))
    assert found["m-p"]["type"] == "site_visit"
    assert found["m-i"]["type"] == "identify"
    assert found["m-t"]["type"] == "custom"
    assert found["m-t"]["properties"]["name"] == "Wishlist Shared"


async def test_refusals_are_4xx_with_code_and_message_never_a_silent_200(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    track = {"userId": "u", "event": "Signed Up", "messageId": "m-ok"}
    cases = [
        ("/v1/track", track, {}, 401),
        (
            "/v1/track",
            track,
            {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()},
            401,
        ),
        (
            "/v1/track",
            track,
            {"Authorization": "Basic " + base64.b64encode(f"{READ_TOKEN}:".encode()).decode()},
            401,
        ),
        ("/v1/track", {"userId": "u"}, BASIC, 400),
        ("/v1/track", {"event": "Signed Up"}, BASIC, 400),
        ("/v1/page", {"userId": "u"}, BASIC, 400),
        ("/v1/batch", {"nobatch": []}, BASIC, 400),
    ]
    for path, body, headers, status in cases:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code == status, (path, body, response.text)
        assert set(response.json()) == {"code", "message"}
    mixed = {
        "batch": [
            {
                "type": "track",
                "userId": "u",
                "event": "Product Reviewed",
                "messageId": "m-bad",
                "properties": {"rating": 7},
            },
            {"type": "track", "userId": "u", "event": "Signed Up", "messageId": "m-good"},
            {"type": "bogus", "userId": "u", "messageId": "m-bogus"},
        ]
    }
    response = await client.post("/v1/batch", json=mixed, headers=BASIC)
    assert response.status_code == 400
    message = response.json()["message"]
    assert "2 of 3 messages refused" in message
    assert "[0] properties.rating" in message
    assert "[2] type" in message
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2, timeout=3)
    assert list(values(records)) == ["m-good"]
    too_big = {
        "batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * 30_000}}]
        * 18
    }
    response = await client.post("/v1/batch", json=too_big, headers=BASIC)
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"


async def test_a_retried_message_keeps_its_message_id_and_the_clock_is_corrected(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    now = datetime.now(UTC)
    skewed = now + timedelta(hours=2)  # a client clock 2 hours fast
    body = {
        "batch": [
            {
                "type": "track",
                "userId": "u-3",
                "event": "Signed Up",
                "messageId": "m-same",
                "timestamp": (skewed - timedelta(seconds=30)).isoformat(),
            }
        ],
        "sentAt": skewed.isoformat(),
    }
    for _ in range(2):
        assert (await client.post("/v1/batch", json=body, headers=BASIC)).status_code == 200
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2)
    events = [orjson.loads(r.value) for r in records]
    assert [e["event_id"] for e in events] == ["m-same", "m-same"]  # dedupe key (source, id)
    occurred = datetime.fromisoformat(events[0]["occurred_at"])
    assert abs((now - timedelta(seconds=30) - occurred).total_seconds()) < 5


@pytest.mark.parametrize("use_gzip", [True, False], ids=["gzip", "plain"])
async def test_the_real_segment_python_client_delivers_track_identify_page(
    common: CommonSettings, use_gzip: bool
) -> None:
    errors: list[Any] = []
    with serving(create_app(IngestSettings())) as base_url:
        analytics = Client(
            WRITE_KEY,
            host=base_url,
            gzip=use_gzip,
            max_retries=1,
            on_error=lambda error, batch: errors.append(error),
        )
        user = f"user-{uuid.uuid4().hex[:6]}"
        analytics.identify(user, {"plan": "pro", "email": "u@example.com"})
        analytics.track(
            user, "Order Completed", {"order_id": "o-9", "revenue": 42.5, "currency": "USD"}
        )
        analytics.track(user, "Something Else Happened", {"k": "v"})
        analytics.page(user, "Docs", "Install", {"url": "https://s.example/docs"})
        analytics.flush()
        analytics.join()
    assert errors == []
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=4)
    docs = await opened(common, [r.value for r in records])
    by_type = {dict(r.headers)["type"].decode(): doc for r, doc in zip(records, docs, strict=True)}
    assert set(by_type) == {"identify", "purchase", "custom", "site_visit"}
    assert all(r.key == user.encode() for r in records)
    assert by_type["purchase"]["properties"]["amount"] == "42.5"
    assert by_type["identify"]["properties"]["traits"]["plan"] == "pro"
    assert by_type["site_visit"]["properties"]["url"] == "https://s.example/docs"
    assert by_type["custom"]["properties"]["name"] == "Something Else Happened"


async def test_the_real_client_sees_a_refusal(common: CommonSettings) -> None:
    with serving(create_app(IngestSettings())) as base_url:
        analytics = Client("not-a-key", host=base_url, sync_mode=True, max_retries=0)
        with pytest.raises(APIError) as info:
            analytics.track("u", "Signed Up")
    assert (info.value.status, info.value.code) == (401, "unauthorized")
