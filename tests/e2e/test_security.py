"""Security cases against the real ingest process on the real broker (and the stage engine
and metrics behind it): forged, stale and replayed signatures, a key speaking for another
source, oversized bodies and batches at the default limits; a write key that can change or
read nothing on the stage engine, SSRF-style webhook URLs, and a flood of unknown keys.

What the in-process tests already show is not repeated here (Shopify's wrong secret and
tampered body, a Stripe signature 10 minutes old, a foreign ``source`` on ``POST /v1/events``,
batch limits and gzip bombs under a small body limit, 429 with ``Retry-After``); the flood of
one key against another's latency is the chaos scenario ``test_flood``.
"""

from __future__ import annotations

import base64
import gzip
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from clm_devstack.services import start_service
from clm_infra.db import create_engine
from clm_infra.keys import store_key
from clm_infra.settings import CommonSettings
from clm_ingest.signatures import sign_timestamped_hex
from tests.e2e.conftest import Stack, free_port, settings_of
from tests.factories import event_doc
from tests.integration.conftest import eventually, read_topic
from tests.keys import ADMIN, READ, WRITE, WRITE_KEY
from tests.webhook_payloads import (
    SECRETS,
    SHOPIFY_ORDER,
    STRIPE_CHARGE,
    shopify_headers,
    store_secrets,
    stripe_event,
)

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
OTHER_KEY = "e2e-other-shop-key"  # a write key of source "other-shop"
MIB = 1024 * 1024


async def prepare_sources(settings: CommonSettings) -> None:
    """The providers' secrets (source shop-eu) and a second source's write key."""
    await store_secrets(settings)
    engine = create_engine(settings.database.url, pool_size=1)
    async with engine.begin() as conn:
        await store_key(conn, key=OTHER_KEY, kind="write", source="other-shop")
    await engine.dispose()


@pytest.fixture
async def secured(stack: Stack) -> AsyncIterator[tuple[Stack, CommonSettings]]:
    """The three services, with the secrets and keys of :func:`prepare_sources`."""
    settings = settings_of(stack.env)
    await prepare_sources(settings)
    yield stack, settings


@pytest.fixture
async def ingest(
    prepared_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[str, CommonSettings]]:
    """The ingest process alone (what refuses needs nothing behind it): its URL, settings."""
    settings = settings_of(prepared_env)
    await prepare_sources(settings)
    process = start_service("ingest", prepared_env, tmp_path, free_port())
    try:
        yield process.base_url, settings
    finally:
        process.stop()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def nothing_published(settings: CommonSettings) -> None:
    assert (
        await read_topic(settings.kafka.bootstrap, settings.topics.events, expect=1, timeout=2)
        == []
    )


async def test_forged_malformed_and_stale_signatures_are_401_and_publish_nothing(
    ingest: tuple[str, CommonSettings],
) -> None:
    url, settings = ingest
    charge = orjson.dumps(stripe_event("charge.succeeded", STRIPE_CHARGE))
    now = int(time.time())
    signed = sign_timestamped_hex(SECRETS["stripe"], charge, now)
    stripe_cases = {
        "another secret": sign_timestamped_hex(b"whsec_not-ours", charge, now),
        "another body": sign_timestamped_hex(SECRETS["stripe"], charge + b" ", now),
        "stale (6 min old)": sign_timestamped_hex(SECRETS["stripe"], charge, now - 360),
        "from the future (6 min)": sign_timestamped_hex(SECRETS["stripe"], charge, now + 360),
        "v0 scheme only": signed.replace("v1=", "v0="),
        "no timestamp": signed.split(",", 1)[1],
        "timestamp not a number": signed.replace(f"t={now}", "t=soon"),
        "signature not hex": f"t={now},v1=zz{'0' * 62}",
        "empty": "",
    }
    generic = orjson.dumps(event_doc("review", customer_id="cust-g", source=None))
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for case, header in stripe_cases.items():
            response = await http.post(
                "/v1/webhooks/stripe", content=charge, headers={"Stripe-Signature": header}
            )
            assert problem(response, 401)["title"] == "Unauthorized", case
        stale = await http.post(
            "/v1/webhooks/stripe",
            content=charge,
            headers={"Stripe-Signature": stripe_cases["stale (6 min old)"]},
        )
        assert "from now" in stale.json()["detail"]  # says why, not just "bad"

        body = orjson.dumps(SHOPIFY_ORDER)
        good = shopify_headers(body, SECRETS["shopify"])
        for case, value in {
            "missing": None,
            "not base64": "%%%not-base64%%%",
            "hex instead of base64": "ab" * 32,
        }.items():
            headers = {k: v for k, v in good.items() if k != "X-Shopify-Hmac-Sha256"}
            if value is not None:
                headers["X-Shopify-Hmac-Sha256"] = value
            response = await http.post("/v1/webhooks/shopify", content=body, headers=headers)
            assert problem(response, 401)["status"] == 401, case

        forged = sign_timestamped_hex(b"clmwh_guessed", generic, now)
        response = await http.post(
            "/v1/webhooks/generic", content=generic, headers={"X-CLM-Signature": forged}
        )
        problem(response, 401)
        an_hour_old = sign_timestamped_hex(SECRETS["generic"], generic, now - 3600)
        response = await http.post(
            "/v1/webhooks/generic", content=generic, headers={"X-CLM-Signature": an_hour_old}
        )
        problem(response, 401)

        metrics = (await http.get("/metrics")).text
    assert 'reason="bad_signature",route="/v1/webhooks/stripe"' in metrics
    await nothing_published(settings)


ORDER_EVENT = f"shopify:order:{SHOPIFY_ORDER['id']}"


async def test_a_replayed_signed_delivery_is_applied_once(
    secured: tuple[Stack, CommonSettings],
) -> None:
    """The same signed bytes twice, within the tolerance (a provider's retry, or someone
    replaying a captured delivery): both answered 200, both on the topic with one event id,
    and the stage engine and the metrics count the purchase once."""
    stack, settings = secured
    now = int(time.time())
    charge = orjson.dumps(
        {**stripe_event("charge.succeeded", STRIPE_CHARGE, id_="evt_replayed"), "created": now}
    )
    stripe_headers = {"Stripe-Signature": sign_timestamped_hex(SECRETS["stripe"], charge, now)}
    order = orjson.dumps({**SHOPIFY_ORDER, "created_at": now_iso()})
    async with httpx.AsyncClient(timeout=10) as http:
        for n in range(2):
            # each time with a new (unsigned) delivery id: still one event
            order_headers = shopify_headers(order, SECRETS["shopify"], delivery=f"wh-{n}")
            response = await http.post(
                f"{stack.ingest}/v1/webhooks/stripe", content=charge, headers=stripe_headers
            )
            assert response.json() == {"status": "accepted", "event_ids": ["stripe:evt_replayed"]}
            response = await http.post(
                f"{stack.ingest}/v1/webhooks/shopify", content=order, headers=order_headers
            )
            assert response.json() == {"status": "accepted", "event_ids": [ORDER_EVENT]}

        records = await read_topic(settings.kafka.bootstrap, settings.topics.events, expect=4)
        ids = sorted(orjson.loads(r.value)["event_id"] for r in records)
        assert ids == [ORDER_EVENT] * 2 + ["stripe:evt_replayed"] * 2
        assert {dict(r.headers)["source"] for r in records} == {b"shop-eu"}

        async def counted() -> dict[str, Any] | None:
            r = await http.get(f"{stack.metrics}/v1/kpis?window=24h", headers=READ)
            body: dict[str, Any] = r.json()
            return body if body["events"] >= 2 else None

        kpis = await eventually(counted, timeout=30)
        for customer, revenue in (
            ("stripe:cus_NffrFeUfNV2Hib", "10.99"),
            ("shopify:115310627314723954", "403.00"),
        ):
            found = await http.get(f"{stack.stage_engine}/v1/customers/{customer}", headers=READ)
            assert found.status_code == 200, found.text
            assert (found.json()["purchases"], found.json()["revenue"]) == (1, revenue)
            history = await http.get(
                f"{stack.stage_engine}/v1/customers/{customer}/history", headers=READ
            )
            assert [t["to_stage"] for t in history.json()["transitions"]] == ["conversion"]
    assert (kpis["events"], kpis["purchases"]) == (2, 2)


async def test_a_key_cannot_speak_for_another_source(
    secured: tuple[Stack, CommonSettings],
) -> None:
    """The source comes from the write key (or the webhook secret). A body naming another is
    refused (403, or per event in a batch), never published; Segment messages have no source
    field, so theirs is the key's. Idempotency is per source: another source's key reusing an
    event id neither suppresses nor replaces the first source's event."""
    stack, settings = secured
    cid = f"cust-{uuid.uuid4().hex[:8]}"
    shared_id = f"evt-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.ingest, timeout=10) as http:
        for claimed in ("other-shop", "Shop", "shop ", ""):
            doc = event_doc("signup", customer_id=cid, source=claimed)
            body = problem(await http.post("/v1/events", json=doc, headers=WRITE), 403)
            assert body["errors"][0]["field"] == "source", claimed
        batch = {"events": [event_doc("signup", customer_id=cid, source="other-shop")] * 2}
        body = problem(await http.post("/v1/events/batch", json=batch, headers=WRITE), 422)
        assert {e["field"] for e in body["errors"]} == {"events[0].source", "events[1].source"}

        review = orjson.dumps(event_doc("review", customer_id=cid, source="other-shop"))
        signed = sign_timestamped_hex(SECRETS["generic"], review, int(time.time()))
        response = await http.post(
            "/v1/webhooks/generic", content=review, headers={"X-CLM-Signature": signed}
        )
        assert problem(response, 403)["errors"][0]["field"] == "source"

        segment = {
            "userId": cid,
            "event": "Signed Up",
            "messageId": "seg-1",
            "source": "other-shop",
            "context": {"source": "other-shop"},
        }
        assert (await http.post("/v1/track", json=segment, headers=BASIC)).json() == {
            "success": True
        }
        for key in (WRITE_KEY, OTHER_KEY):
            doc = event_doc("purchase", customer_id=cid, event_id=shared_id, source=None)
            doc["occurred_at"] = now_iso()
            response = await http.post(
                "/v1/events", json=doc, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 202, response.text

    records = await read_topic(settings.kafka.bootstrap, settings.topics.events, expect=3)
    published = sorted(
        (dict(r.headers)["source"].decode(), orjson.loads(r.value)["event_id"]) for r in records
    )
    assert published == [("other-shop", shared_id), ("shop", shared_id), ("shop", "seg-1")]

    async with httpx.AsyncClient(timeout=10) as http:

        async def both_purchases() -> dict[str, Any] | None:
            r = await http.get(f"{stack.stage_engine}/v1/customers/{cid}", headers=READ)
            body: dict[str, Any] = r.json()
            return body if r.status_code == 200 and body["purchases"] == 2 else None

        customer = await eventually(both_purchases, timeout=30)
    assert customer["first_source"] == "shop"


async def test_oversized_bodies_and_batches_are_refused_at_the_default_limits(
    ingest: tuple[str, CommonSettings],
) -> None:
    """1 MiB bodies (as sent, streamed without a length, or inflated), 500-event batches and
    Segment's own limits, on the real process with its default settings: 413 problem+json on
    our paths, Segment's ``{"code", "message"}`` on its paths, 413 before a webhook is even
    verified; nothing published."""
    url, settings = ingest
    filler = "x" * (MIB + 1 - len(orjson.dumps(event_doc("custom", blob=""))))
    exact = orjson.dumps(event_doc("custom", blob=filler))
    assert len(exact) == MIB + 1

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(exact), 64 * 1024):
            yield exact[start : start + 64 * 1024]

    many = [event_doc("custom", customer_id=f"c{i}", blob="x" * 2500) for i in range(420)]
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        problem(await http.post("/v1/events", content=exact, headers=WRITE), 413)
        streamed = await http.post("/v1/events", content=chunks(), headers=WRITE)
        assert "content-length" not in streamed.request.headers
        problem(streamed, 413)
        bomb = gzip.compress(b" " * (8 * MIB))
        problem(
            await http.post(
                "/v1/events", content=bomb, headers={**WRITE, "Content-Encoding": "gzip"}
            ),
            413,
        )
        big_batch = orjson.dumps({"events": many})
        assert len(big_batch) > MIB  # over the body limit, under the event count limit
        problem(await http.post("/v1/events/batch", content=big_batch, headers=WRITE), 413)
        small = event_doc("signup", source=None)
        body = problem(
            await http.post("/v1/events/batch", json={"events": [small] * 501}, headers=WRITE),
            413,
        )
        assert body["errors"] == [{"field": "events", "message": "at most 500 events"}]

        message = {"userId": "u", "event": "E", "messageId": "m"}
        for path, payload, status, code in (
            ("/v1/track", {**message, "properties": {"p": "x" * 33_000}}, 400, "invalid_message"),
            ("/v1/batch", {"batch": [{**message, "type": "track"}] * 501}, 400, "batch_too_large"),
            ("/v1/batch", {"batch": [{"p": "x" * 30_000}] * 36}, 413, "body_too_large"),
        ):
            response = await http.post(path, json=payload, headers=BASIC)
            assert response.status_code == status, (path, response.text)
            assert response.json()["code"] == code
            assert set(response.json()) == {"code", "message"}
        response = await http.post(
            "/v1/b", content=b'{"writeKey": "' + b"k" * MIB + b'"}', headers=BASIC
        )
        assert (response.status_code, response.json()["code"]) == (413, "body_too_large")

        huge_order = orjson.dumps({**SHOPIFY_ORDER, "note": "x" * MIB})
        signed = shopify_headers(huge_order, SECRETS["shopify"])
        problem(await http.post("/v1/webhooks/shopify", content=huge_order, headers=signed), 413)
    await nothing_published(settings)


async def test_a_write_key_changes_and_reads_nothing_and_urls_inside_are_refused(
    secured: tuple[Stack, CommonSettings],
) -> None:
    """The attacker's session of issue 28, replayed against the running processes."""
    stack, _ = secured
    async with httpx.AsyncClient(timeout=10) as http:
        posted = await http.post(
            f"{stack.ingest}/v1/events",
            json=event_doc("signup", customer_id="target"),
            headers=WRITE,
        )
        assert posted.status_code == 202, posted.text

        async def known() -> bool:
            url = f"{stack.stage_engine}/v1/customers/target"
            return (await http.get(url, headers=READ)).status_code == 200

        await eventually(known, timeout=30)
        engine = stack.stage_engine
        for response in (
            await http.delete(f"{engine}/v1/customers/target", headers=WRITE),
            await http.post(
                f"{engine}/v1/customers/target/merge", json={"from": "x"}, headers=WRITE
            ),
            await http.post(
                f"{engine}/v1/webhooks", json={"url": "https://93.184.215.14/"}, headers=WRITE
            ),
            await http.get(f"{engine}/v1/customers/target", headers=WRITE),
            await http.get(f"{stack.metrics}/v1/kpis?window=7d", headers=WRITE),
        ):
            problem(response, 403)
        for url in (
            "http://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/hook",
            "https://[::ffff:169.254.169.254]/hook",
        ):
            refused = problem(
                await http.post(f"{engine}/v1/webhooks", json={"url": url}, headers=ADMIN), 422
            )
            assert refused["errors"][0]["field"] == "url", url
        erased = await http.delete(f"{engine}/v1/customers/target", headers=ADMIN)
        assert erased.status_code == 200, erased.text

        flood = [
            await http.get(f"{engine}/v1/stages", headers={"Authorization": f"Bearer clmr_{n}"})
            for n in range(40)
        ]
        statuses = [r.status_code for r in flood]
        assert statuses[0] == 401
        assert statuses[-1] == 429, statuses
        assert int(flood[-1].headers["retry-after"]) >= 1
