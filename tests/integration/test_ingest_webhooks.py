"""Signed webhooks on the real broker: secrets from Postgres, events consumed back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from clm_infra.db import create_engine
from clm_infra.settings import CommonSettings
from clm_infra.webhook_secrets import (
    list_secrets,
    revoke_secret,
)
from clm_ingest.settings import IngestSettings
from clm_ingest.signatures import sign_timestamped_hex
from clm_stage_engine.app import create_app as create_engine_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.apps import app_client
from tests.integration.conftest import eventually, read_topic, send_events
from tests.integration.ingest_server import ingest_client
from tests.keys import READ
from tests.webhook_payloads import (
    SECRETS,
    SHOPIFY_ORDER,
    STRIPE_CHARGE,
    STRIPE_SUBSCRIPTION,
    ZENDESK_TRIGGER,
    shopify_headers,
    store_secrets,
    stripe_event,
)


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    await store_secrets(common)
    async with ingest_client(IngestSettings(auth_cache_s=0)) as c:
        yield c


ORDER_EVENT = f"shopify:order:{SHOPIFY_ORDER['id']}"


async def test_shopify_order_is_published_with_the_orders_id(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    body = orjson.dumps(SHOPIFY_ORDER)
    headers = shopify_headers(body, SECRETS["shopify"])
    for _ in range(2):  # Shopify retries a delivery
        response = await client.post("/v1/webhooks/shopify", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "accepted", "event_ids": [ORDER_EVENT]}
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=2)
    assert {orjson.loads(r.value)["event_id"] for r in records} == {ORDER_EVENT}
    record = records[0]
    assert record.key == b"shopify:115310627314723954"
    assert dict(record.headers) == {
        "schema_version": b"1",
        "source": b"shop-eu",
        "type": b"purchase",
    }
    assert orjson.loads(record.value)["properties"]["amount"] == "403.00"


async def test_a_replayed_shopify_delivery_with_new_headers_is_the_same_event(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    """The delivery headers are not signed: a captured order resent with a new
    X-Shopify-Event-Id / X-Shopify-Webhook-Id names the same event; resent with another
    topic it is refused (the body says what it is)."""
    body = orjson.dumps(SHOPIFY_ORDER)
    ids = []
    for delivery in ("wh-1", "wh-replayed-2", "wh-replayed-3"):
        headers = {
            **shopify_headers(body, SECRETS["shopify"], delivery=delivery),
            "X-Shopify-Event-Id": f"evt-{delivery}",
        }
        response = await client.post("/v1/webhooks/shopify", content=body, headers=headers)
        assert response.status_code == 200, response.text
        ids.extend(response.json()["event_ids"])
    assert ids == [ORDER_EVENT] * 3
    as_refund = {
        **shopify_headers(body, SECRETS["shopify"], delivery="wh-4"),
        "X-Shopify-Topic": "refunds/create",
    }
    response = await client.post("/v1/webhooks/shopify", content=body, headers=as_refund)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "X-Shopify-Topic"
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=4, timeout=5)
    assert [orjson.loads(r.value)["event_id"] for r in records] == [ORDER_EVENT] * 3


async def test_bad_signatures_are_401_and_publish_nothing(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    body = orjson.dumps(SHOPIFY_ORDER)
    wrong = shopify_headers(body, b"not the secret")
    assert (
        await client.post("/v1/webhooks/shopify", content=body, headers=wrong)
    ).status_code == 401
    tampered = shopify_headers(body, SECRETS["shopify"])
    response = await client.post("/v1/webhooks/shopify", content=body + b" ", headers=tampered)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    # the right secret, but only shop-us's secrets are asked for
    response = await client.post(
        "/v1/webhooks/shopify?source=shop-us", content=body, headers=tampered
    )
    assert response.status_code == 401
    unsigned = await client.post("/v1/webhooks/stripe", content=b"{}")
    assert unsigned.status_code == 401
    assert await read_topic(common.kafka.bootstrap, common.topics.events, expect=1, timeout=2) == []


async def test_stripe_fresh_signature_accepted_replayed_stale_one_refused(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    charge = orjson.dumps(stripe_event("charge.succeeded", STRIPE_CHARGE))
    now = int(time.time())
    fresh = {"Stripe-Signature": sign_timestamped_hex(SECRETS["stripe"], charge, now)}
    response = await client.post("/v1/webhooks/stripe", content=charge, headers=fresh)
    assert response.status_code == 200, response.text
    stale = {"Stripe-Signature": sign_timestamped_hex(SECRETS["stripe"], charge, now - 600)}
    replay = await client.post("/v1/webhooks/stripe", content=charge, headers=stale)
    assert replay.status_code == 401
    assert "from now" in replay.json()["detail"]
    cancel = orjson.dumps(
        stripe_event("customer.subscription.deleted", STRIPE_SUBSCRIPTION, id_="evt_cancel")
    )
    signed = {"Stripe-Signature": sign_timestamped_hex(SECRETS["stripe"], cancel, now)}
    assert (
        await client.post("/v1/webhooks/stripe", content=cancel, headers=signed)
    ).status_code == 200
    ignored = orjson.dumps(stripe_event("payment_intent.created", {"id": "pi_1"}, id_="evt_x"))
    signed = {"Stripe-Signature": sign_timestamped_hex(SECRETS["stripe"], ignored, now)}
    response = await client.post("/v1/webhooks/stripe", content=ignored, headers=signed)
    assert response.json() == {"status": "ignored"}
    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=3, timeout=5)
    assert [dict(r.headers)["type"] for r in records] == [
        b"purchase",
        b"subscription_cancelled",
    ] or sorted(dict(r.headers)["type"] for r in records) == [
        b"purchase",
        b"subscription_cancelled",
    ]
    assert {r.key for r in records} == {b"stripe:cus_NffrFeUfNV2Hib", b"stripe:cus_NeZwdNtLEOXuvB"}


async def test_zendesk_and_generic_webhooks(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    body = orjson.dumps(ZENDESK_TRIGGER)
    ts = datetime.now(UTC).isoformat()
    signature = base64.b64encode(
        hmac.new(SECRETS["zendesk"], ts.encode() + body, hashlib.sha256).digest()
    ).decode()
    headers = {
        "X-Zendesk-Webhook-Signature": signature,
        "X-Zendesk-Webhook-Signature-Timestamp": ts,
        "X-Zendesk-Webhook-Invocation-Id": "inv-42",
    }
    response = await client.post("/v1/webhooks/zendesk", content=body, headers=headers)
    assert response.status_code == 200, response.text
    (ticket_id,) = response.json()["event_ids"]
    # replayed within the signature's window with a new invocation id: the same event
    replay = {**headers, "X-Zendesk-Webhook-Invocation-Id": "inv-43"}
    response = await client.post("/v1/webhooks/zendesk", content=body, headers=replay)
    assert response.json() == {"status": "accepted", "event_ids": [ticket_id]}
    bad = {**headers, "X-Zendesk-Webhook-Signature": base64.b64encode(b"x" * 32).decode()}
    assert (await client.post("/v1/webhooks/zendesk", content=body, headers=bad)).status_code == 401

    review = orjson.dumps(event_doc("review", customer_id="cust-r", source=None, rating=4))
    signed = {"X-CLM-Signature": sign_timestamped_hex(SECRETS["generic"], review, int(time.time()))}
    response = await client.post("/v1/webhooks/generic", content=review, headers=signed)
    assert response.status_code == 200, response.text
    invalid = orjson.dumps(event_doc("review", source=None, rating=6))
    signed = {
        "X-CLM-Signature": sign_timestamped_hex(SECRETS["generic"], invalid, int(time.time()))
    }
    response = await client.post("/v1/webhooks/generic", content=invalid, headers=signed)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "properties.rating"

    records = await read_topic(common.kafka.bootstrap, common.topics.events, expect=4, timeout=5)
    assert len(records) == 3  # the ticket twice (one event id), the review
    found = {dict(r.headers)["type"]: r for r in records}
    assert set(found) == {b"support_ticket", b"review"}
    ticket = orjson.loads(found[b"support_ticket"].value)
    assert ticket["event_id"] == ticket_id
    assert ticket["properties"] == {"ticket_id": "zendesk:5158", "status": "solved", "csat": 5}
    assert found[b"review"].key == b"cust-r"
    assert dict(found[b"review"].headers)["source"] == b"shop-eu"


async def test_a_revoked_secret_no_longer_verifies(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    charge = orjson.dumps(stripe_event("charge.succeeded", STRIPE_CHARGE))
    headers = {
        "Stripe-Signature": sign_timestamped_hex(SECRETS["stripe"], charge, int(time.time()))
    }
    assert (
        await client.post("/v1/webhooks/stripe", content=charge, headers=headers)
    ).status_code == 200
    engine = create_engine(common.database.url, pool_size=1)
    async with engine.begin() as conn:
        stripe_ids = [r.id for r in await list_secrets(conn) if r.provider == "stripe"]
        assert stripe_ids
        for secret_id in stripe_ids:
            assert await revoke_secret(conn, secret_id)
    await engine.dispose()
    response = await client.post("/v1/webhooks/stripe", content=charge, headers=headers)
    assert response.status_code == 401  # the secrets cache is off in this test (TTL 0)


async def test_replayed_deliveries_count_once_in_the_stage_engine(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    """End to end (ingest → Kafka → stage engine → Postgres): one 42.00 order delivered three
    times with new delivery headers, and one Zendesk ticket replayed with a new invocation id,
    are one purchase of 42.00 and one solved ticket."""
    order = {**SHOPIFY_ORDER, "total_price": "42.00"}
    body = orjson.dumps(order)
    for n in range(3):
        headers = {
            **shopify_headers(body, SECRETS["shopify"], delivery=f"wh-{n}"),
            "X-Shopify-Event-Id": f"evt-{n}",
        }
        response = await client.post("/v1/webhooks/shopify", content=body, headers=headers)
        assert response.status_code == 200, response.text
    ticket = orjson.dumps(ZENDESK_TRIGGER)
    ts = datetime.now(UTC).isoformat()
    signature = base64.b64encode(
        hmac.new(SECRETS["zendesk"], ts.encode() + ticket, hashlib.sha256).digest()
    ).decode()
    for n in range(2):
        headers = {
            "X-Zendesk-Webhook-Signature": signature,
            "X-Zendesk-Webhook-Signature-Timestamp": ts,
            "X-Zendesk-Webhook-Invocation-Id": f"inv-{n}",
        }
        response = await client.post("/v1/webhooks/zendesk", content=ticket, headers=headers)
        assert response.status_code == 200, response.text

    # then one more event for each customer, on the same partitions after the replays: once
    # it is applied, every replay before it has been seen
    await send_events(
        common,
        event_doc("site_visit", customer_id="shopify:115310627314723954", event_id="after-1"),
        event_doc("site_visit", customer_id="cust-42", event_id="after-2"),
    )
    engine_app = create_engine_app(StageEngineSettings(stage_engine_idle_recheck_s=0.5))
    async with app_client(engine_app, "http://engine") as engine:

        async def after_the_sentinels() -> tuple[dict[str, Any], dict[str, Any]] | None:
            found = [
                await engine.get(f"/v1/customers/{cid}", headers=READ)
                for cid in ("shopify:115310627314723954", "cust-42")
            ]
            if any(r.status_code != 200 or r.json()["events"] < 2 for r in found):
                return None
            return found[0].json(), found[1].json()

        buyer, requester = await eventually(after_the_sentinels)
    assert (buyer["purchases"], Decimal(buyer["revenue"]), buyer["events"]) == (
        1,
        Decimal("42.00"),
        2,
    )
    assert (requester["tickets_solved"], requester["events"]) == (1, 2)
