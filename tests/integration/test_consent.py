"""Consent per purpose on real Kafka and Postgres: what the read API shows (both read paths),
the latest consent winning over a late older one, marketing webhooks and marketing segment
exports leaving out customers who withdrew, merges, erasure and replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra import replay
from clm_infra.consent_schema import customer_consent
from clm_infra.db import create_engine
from clm_infra.kafka import log_ends
from clm_infra.schema import processed_events
from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from clm_stage_engine.webhooks import verify_signature
from tests.conftest import alembic_upgrade
from tests.factories import event_doc
from tests.integration.apps import app_client, read_customer
from tests.integration.conftest import NO_REQUEST_LIMITS, eventually, send_events, until_events
from tests.integration.webhook_receiver import Receiver, receiving
from tests.keys import ADMIN, READ

# recent enough that nothing is inactive by the real clock (the app's own sweeper runs too)
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
BUYERS = {"fact": "purchases", "op": "ge", "value": 1}


def at(days: float) -> str:
    return (DAY0 + timedelta(days=days)).isoformat()


def consent(
    cid: str | None, event_id: str, days: float, granted: bool, purpose: str = "marketing"
) -> dict[str, Any]:
    return event_doc(
        "consent",
        customer_id=cid,
        event_id=event_id,
        occurred_at=at(days),
        purpose=purpose,
        granted=granted,
    )


def anonymous(doc: dict[str, Any], anon: str) -> dict[str, Any]:
    return {**doc, "anonymous_id": anon}


async def stored_consent(db: AsyncEngine, *ids: str) -> dict[tuple[str, str], tuple[bool, str]]:
    """(customer, purpose) → (granted, event id) of the ids' consent rows."""
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                customer_consent.c.customer_id,
                customer_consent.c.purpose,
                customer_consent.c.granted,
                customer_consent.c.event_id,
            ).where(customer_consent.c.customer_id.in_(ids))
        )
        return {(c, p): (g, e) for c, p, g, e in rows}


async def until_claimed(db: AsyncEngine, *event_ids: str) -> None:
    """Until the consent events are applied (their claims written)."""

    async def claimed() -> bool | None:
        async with db.connect() as conn:
            found = await conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.event_id.in_(event_ids)
                )
            )
            return len(found.all()) == len(event_ids) or None

    await eventually(claimed)


@pytest.fixture
async def client(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = StageEngineSettings(stage_engine_idle_recheck_s=0.5, **NO_REQUEST_LIMITS)
    async with app_client(create_app(settings), "http://engine") as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[str]:
    with receiving() as url:
        yield url


async def test_the_customer_shows_its_consent_and_a_late_older_one_loses(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        event_doc("site_visit", customer_id="c-1", event_id="c1-v", occurred_at=at(0)),
        consent("c-1", "c1-m1", 2, True),
        consent("c-1", "c1-a1", 2, True, "analytics"),
    )
    await until_claimed(db, "c1-m1", "c1-a1")
    doc = await until_events(client, "c-1", 1)
    assert doc["consent"] == {
        "analytics": {"granted": True, "at": at(2)},
        "marketing": {"granted": True, "at": at(2)},
    }
    assert doc["marketing"] == {"allowed": True, "reason": f"marketing consent granted at {at(2)}"}

    await send_events(common, consent("c-1", "c1-m2", 3, False))
    await until_claimed(db, "c1-m2")
    await send_events(common, consent("c-1", "c1-m0", 1, True))  # late and older
    await send_events(common, consent("c-1", "c1-m2", 3, False))  # redelivered
    await until_claimed(db, "c1-m0")
    assert await stored_consent(db, "c-1") == {
        ("c-1", "analytics"): (True, "c1-a1"),
        ("c-1", "marketing"): (False, "c1-m2"),
    }
    hot = await read_customer(client, "c-1")
    routed_app = create_app(StageEngineSettings(**NO_REQUEST_LIMITS), hot_read=False)
    async with app_client(routed_app, "http://engine") as routed:
        by_router = (await routed.get("/v1/customers/c-1", headers=READ)).json()
    assert hot == by_router
    assert hot is not None
    assert hot["marketing"] == {
        "allowed": False,
        "reason": f"marketing consent withdrawn at {at(3)}",
    }
    assert hot["consent"]["marketing"] == {"granted": False, "at": at(3)}
    # not a touchpoint: no event counted, no activity, no stage change
    assert (hot["events"], hot["last_seen_at"], hot["stage"]) == (1, at(0), "reach")


async def test_a_customer_without_consent_is_open_to_marketing_by_default(
    client: httpx.AsyncClient, common: CommonSettings
) -> None:
    await send_events(common, event_doc("site_visit", customer_id="c-none", occurred_at=at(0)))
    doc = await until_events(client, "c-none", 1)
    assert doc["consent"] == {"analytics": None, "marketing": None}
    assert doc["marketing"] == {
        "allowed": True,
        "reason": "no marketing consent recorded (opt-out default: allowed until withdrawn)",
    }


async def subscribe(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[int, str]:
    created = await client.post("/v1/webhooks", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["secret"]


async def test_marketing_webhooks_skip_customers_who_withdrew(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine, receiver: str
) -> None:
    segment = await client.post(
        "/v1/segments", json={"name": "buyers", "condition": BUYERS}, headers=ADMIN
    )
    assert segment.status_code == 201, segment.text
    sid = segment.json()["id"]
    _, marketing = await subscribe(client, {"url": receiver})
    _, service = await subscribe(client, {"url": receiver, "purpose": "service"})
    _, segment_marketing = await subscribe(client, {"url": receiver, "segments": [sid]})
    listed = (await client.get("/v1/webhooks", headers=ADMIN)).json()["subscriptions"]
    assert [s["purpose"] for s in listed] == ["marketing", "service", "marketing"]
    bad = await client.post("/v1/webhooks", json={"url": receiver, "purpose": "ads"}, headers=ADMIN)
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["purpose"]

    await send_events(common, consent("w-out", "w-c", 0, False))
    await until_claimed(db, "w-c")
    await send_events(
        common,
        event_doc("purchase", customer_id="w-out", event_id="w-p1", occurred_at=at(1)),
        event_doc("purchase", customer_id="w-in", event_id="w-p2", occurred_at=at(1)),
    )

    def got(secret: str) -> list[tuple[str, str]]:
        out = []
        for signature, body in Receiver.received:
            if verify_signature(secret, signature, body, now=time.time()):
                payload = orjson.loads(body)
                out.append((payload["type"], payload["customer_id"]))
        return sorted(out)

    async def all_sent() -> bool | None:
        sent = (len(got(service)), len(got(marketing)), len(got(segment_marketing)))
        return sent == (2, 1, 1) or None

    await eventually(all_sent)
    await until_events(client, "w-out", 1)
    assert got(service) == [("stage.changed", "w-in"), ("stage.changed", "w-out")]
    assert got(marketing) == [("stage.changed", "w-in")]
    assert got(segment_marketing) == [("segment.entered", "w-in")]
    listed = (await client.get("/v1/webhooks", headers=ADMIN)).json()["subscriptions"]
    assert [s["deliveries"] for s in listed] == [{"delivered": n} for n in (1, 2, 1)]
    metrics = (await client.get("/metrics")).text
    assert 'clm_webhook_deliveries_skipped_total{reason="consent"}' in metrics


async def test_marketing_segment_exports_leave_out_withdrawals_and_count_them(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    created = await client.post(
        "/v1/segments", json={"name": "buyers", "condition": BUYERS}, headers=ADMIN
    )
    sid = created.json()["id"]
    await send_events(
        common,
        *(event_doc("purchase", customer_id=f"s-{i}", event_id=f"s-p{i}") for i in range(1, 5)),
        consent("s-2", "s-c2", 0, False),
        consent("s-3", "s-c3", 0, True),
        consent("s-4", "s-c4", 0, False, "analytics"),
    )
    await until_claimed(db, "s-c2", "s-c3", "s-c4")

    async def members(**params: Any) -> dict[str, Any]:
        found = await client.get(f"/v1/segments/{sid}/members", params=params, headers=READ)
        assert found.status_code == 200, found.text
        return dict(found.json())

    async def all_in() -> dict[str, Any] | None:
        page = await members()
        return page if len(page["members"]) == 4 else None

    everyone = await eventually(all_in)
    assert "excluded" not in everyone
    page = await members(purpose="marketing")
    assert [m["customer_id"] for m in page["members"]] == ["s-1", "s-3", "s-4"]
    assert page["excluded"] == {"marketing_consent_withdrawn": 1}
    first = await members(purpose="marketing", limit=2)
    assert [m["customer_id"] for m in first["members"]] == ["s-1", "s-3"]
    rest = await members(purpose="marketing", limit=2, after=first["next"])
    assert [m["customer_id"] for m in rest["members"]] == ["s-4"]
    assert rest["excluded"] == {"marketing_consent_withdrawn": 1}
    bad = await client.get(f"/v1/segments/{sid}/members", params={"purpose": "sales"}, headers=READ)
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["purpose"]


async def test_merges_keep_the_latest_consent_and_erasure_forgets_it(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        anonymous(event_doc("site_visit", customer_id=None, event_id="m-v"), "m-anon"),
        anonymous(consent(None, "m-c-anon", 2, False), "m-anon"),
        consent("m-1", "m-c-1", 1, True),
        consent("m-1", "m-a-1", 1, True, "analytics"),
        event_doc("signup", customer_id="m-1", event_id="m-s", occurred_at=at(0)),
        event_doc("signup", customer_id="m-2", event_id="m-s2", occurred_at=at(0)),
        consent("m-2", "m-a-2", 5, False, "analytics"),
    )
    await until_claimed(db, "m-c-anon", "m-c-1", "m-a-1", "m-a-2")
    identify = anonymous(
        event_doc("identify", customer_id="m-1", event_id="m-i", occurred_at=at(3)), "m-anon"
    )
    await send_events(common, identify)
    await until_events(client, "m-1", 3)  # the signup, the anonymous visit, the identify
    assert await stored_consent(db, "m-1", "m-anon") == {
        ("m-1", "marketing"): (False, "m-c-anon"),
        ("m-1", "analytics"): (True, "m-a-1"),
    }
    merged = await client.post("/v1/customers/m-1/merge", json={"from": "m-2"}, headers=ADMIN)
    assert merged.status_code == 200, merged.text
    assert await stored_consent(db, "m-1", "m-2") == {
        ("m-1", "marketing"): (False, "m-c-anon"),
        ("m-1", "analytics"): (False, "m-a-2"),
    }
    # a consent that arrives for the anonymous id now lands on the customer
    await send_events(common, anonymous(consent(None, "m-c-late", 6, True), "m-anon"))
    await until_claimed(db, "m-c-late")
    assert (await stored_consent(db, "m-1"))[("m-1", "marketing")] == (True, "m-c-late")

    # an anonymous id with nothing but consent (no profile to merge) brings it along too
    await send_events(common, anonymous(consent(None, "m-a-anon2", 7, True, "analytics"), "a2"))
    await until_claimed(db, "m-a-anon2")
    link = anonymous(
        event_doc("identify", customer_id="m-1", event_id="m-i2", occurred_at=at(8)), "a2"
    )
    await send_events(common, link)
    await until_events(client, "m-1", 5)  # m-2's signup came with the merge
    assert await stored_consent(db, "m-1", "a2") == {
        ("m-1", "marketing"): (True, "m-c-late"),
        ("m-1", "analytics"): (True, "m-a-anon2"),
    }

    erased = await client.delete("/v1/customers/m-1", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    assert await stored_consent(db, "m-1", "m-2", "m-anon") == {}


async def test_anonymisation_forgets_consent(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        event_doc("signup", customer_id="an-1", event_id="an-s", occurred_at=at(0)),
        consent("an-1", "an-c", 1, False),
    )
    await until_claimed(db, "an-c")
    await until_events(client, "an-1", 1)
    done = await client.delete("/v1/customers/an-1?mode=anonymise", headers=ADMIN)
    assert done.status_code == 200, done.text
    assert await stored_consent(db, "an-1", done.json()["pseudonym"]) == {}


async def test_a_replay_rebuilds_consent(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    await send_events(
        common,
        event_doc("signup", customer_id="r-1", event_id="r-s", occurred_at=at(0)),
        consent("r-1", "r-c2", 2, False),
        consent("r-1", "r-c1", 1, True),
        consent("r-1", "r-a", 1, True, "analytics"),
    )
    await until_claimed(db, "r-c2", "r-c1", "r-a")
    live = await stored_consent(db, "r-1")
    assert live[("r-1", "marketing")] == (False, "r-c2")
    ends = await log_ends(common.kafka, common.topics.events)
    async with db.begin() as conn:
        await replay.reset_for_replay(
            conn, StageEngineSettings().stage_engine_group, common.topics.events, ends
        )
    assert await stored_consent(db, "r-1") == {}

    async def rebuilt() -> bool | None:
        return await stored_consent(db, "r-1") == live or None

    await eventually(rebuilt)


async def test_migration_0021_makes_existing_subscriptions_marketing_ones(
    bare_database: str,
) -> None:
    """Privacy by default: a subscription made before consent existed gets the marketing
    purpose; only marketing and service are stored; the downgrade drops both again."""
    await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", "0020_segments")
    db = create_engine(bare_database, pool_size=1)
    try:
        async with db.begin() as conn:
            await conn.execute(
                text("INSERT INTO webhook_subscriptions (url, secret) VALUES ('https://x', 's')")
            )
        await db.dispose()
        await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", "0021_consent")
        async with db.begin() as conn:
            purpose = await conn.execute(text("SELECT purpose FROM webhook_subscriptions"))
            assert purpose.scalar_one() == "marketing"
        with pytest.raises(Exception, match="ck_webhook_subscriptions_purpose"):
            async with db.begin() as conn:
                await conn.execute(text("UPDATE webhook_subscriptions SET purpose = 'ads'"))
        await db.dispose()
        await asyncio.to_thread(alembic_upgrade, bare_database, "downgrade", "0020_segments")
        async with db.connect() as conn:
            left = await conn.execute(text("SELECT to_regclass('customer_consent')"))
            assert left.scalar_one() is None
    finally:
        await db.dispose()
