"""Segments on real Kafka and Postgres, the stage engine app running: entries and exits on the
segments topic and as signed webhooks for a purchase, a refund, a sweep crossing a
``days_since`` threshold, an erasure and a merge; and a backfill of many customers while
events flow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.rules import LifecycleRules
from clm_infra.settings import CommonSettings
from clm_stage_engine.segment_cache import SegmentCache
from clm_stage_engine.sweeper import sweep_once
from clm_stage_engine.usecases.segments import Segmenting
from clm_stage_engine.webhooks import verify_signature
from tests.factories import event_doc
from tests.integration import segment_truth as truth
from tests.integration.apps import read_customer
from tests.integration.conftest import eventually, read_topic, send_events
from tests.integration.webhook_receiver import Receiver, receiving
from tests.keys import ADMIN

# recent enough that nothing is inactive by the real clock (the app's own sweeper runs too)
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


def at(days: float) -> str:
    return (DAY0 + timedelta(days=days)).isoformat()


@pytest.fixture
def receiver() -> Iterator[str]:
    with receiving() as url:
        yield url


async def subscribe(client: httpx.AsyncClient, db: AsyncEngine, url: str, *segments: int) -> str:
    """A webhook subscription to ``segments``' entries and exits; returns its secret."""
    created = await client.post("/v1/webhooks", json={"url": url}, headers=ADMIN)
    assert created.status_code == 201, created.text
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE webhook_subscriptions SET segments = CAST(:s AS bigint[]) WHERE url = :u"),
            {"s": list(segments), "u": url},
        )
    return str(created.json()["secret"])


async def segment_records(common: CommonSettings, expect: int) -> list[dict[str, Any]]:
    got = await read_topic(common.kafka.bootstrap, common.topics.segments, expect=expect)
    return sorted((orjson.loads(r.value) for r in got), key=lambda r: (r["at"], r["kind"]))


async def deliveries(secret: str, expect: int) -> list[dict[str, Any]]:
    async def probe() -> list[tuple[str, bytes]] | None:
        got = list(Receiver.received)
        return got if len(got) >= expect else None

    out = []
    for signature, body in await eventually(probe):
        assert verify_signature(secret, signature, body, now=time.time())
        out.append(orjson.loads(body))
    return out


def brief(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["kind"], r["customer_id"], r["cause"]) for r in records]


async def test_a_purchase_enters_and_a_refund_leaves(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine, receiver: str
) -> None:
    sid = await truth.define_now(db, "paying", {"fact": "net_revenue", "op": "gt", "value": 0})
    secret = await subscribe(client, db, receiver, sid)
    buy = event_doc("purchase", customer_id="payer", event_id="p1", occurred_at=at(1))
    await send_events(common, buy)
    [entered] = await segment_records(common, 1)
    assert brief([entered]) == [("enter", "payer", "event")]
    assert entered["event_id"] == "shop:p1"
    refund = event_doc("refund", customer_id="payer", event_id="r1", occurred_at=at(2))
    refund["properties"] = {**buy["properties"]}
    await send_events(common, refund)
    records = await segment_records(common, 2)
    assert brief(records) == [("enter", "payer", "event"), ("exit", "payer", "event")]
    assert records[1]["event_id"] == "shop:r1"
    assert records[1]["entered_at"] == entered["at"]
    assert schema_errors(records) == []
    hooks = await deliveries(secret, 2)
    assert sorted(h["type"] for h in hooks) == ["segment.entered", "segment.exited"]
    assert {h["segment_id"] for h in hooks} == {sid}


def schema_errors(records: list[dict[str, Any]]) -> list[str]:
    return [e.message for r in records for e in VALIDATOR.iter_errors(r)]


VALIDATOR = truth.record_validator()


async def test_a_sweep_crossing_a_threshold_leaves_at_the_crossing(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine, receiver: str
) -> None:
    sid = await truth.define_now(
        db, "bought lately", {"days_since": "last_purchase_at", "op": "le", "value": 5}
    )
    secret = await subscribe(client, db, receiver, sid)
    bought = DAY0 + timedelta(hours=9, minutes=17, seconds=3)
    doc = event_doc("purchase", customer_id="lapsing", event_id="p", occurred_at=bought.isoformat())
    await send_events(common, doc)
    await segment_records(common, 1)
    # le 5 holds while fewer than 6 whole days have passed: it fails from bought + 6 days on
    crossing = bought + timedelta(days=6)
    segmenting = Segmenting(SegmentCache(), common.topics.segments)
    for now in (crossing - timedelta(microseconds=1), crossing + timedelta(hours=5)):
        await sweep_once(
            db,
            LifecycleRules(),
            now,
            lifecycle_topic=common.topics.lifecycle,
            segmenting=segmenting,
        )
    records = await segment_records(common, 2)
    assert brief(records) == [("enter", "lapsing", "event"), ("exit", "lapsing", "sweep")]
    assert datetime.fromisoformat(records[1]["at"]) == crossing
    assert records[1]["segment_id"] == sid
    assert schema_errors(records) == []
    hooks = await deliveries(secret, 2)
    exited = [h for h in hooks if h["type"] == "segment.exited"]
    assert [(h["cause"], datetime.fromisoformat(h["at"])) for h in exited] == [("sweep", crossing)]
    async with db.connect() as conn:
        assert await truth.open_spans(conn) == set()


async def test_an_erasure_and_a_merge_leave_with_their_cause(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine, receiver: str
) -> None:
    buyers = await truth.define_now(db, "buyers", {"fact": "purchases", "op": "ge", "value": 1})
    repeat = await truth.define_now(db, "repeat", {"fact": "purchases", "op": "ge", "value": 2})
    secret = await subscribe(client, db, receiver, buyers, repeat)
    await send_events(
        common,
        *(
            event_doc("purchase", customer_id=c, event_id=f"p-{c}", occurred_at=at(n))
            for n, c in enumerate(("erased", "kept", "merged"))
        ),
    )
    await segment_records(common, 3)
    erased = await client.delete("/v1/customers/erased", params={"mode": "erase"}, headers=ADMIN)
    assert erased.status_code == 200, erased.text
    merged = await client.post("/v1/customers/kept/merge", json={"from": "merged"}, headers=ADMIN)
    assert merged.status_code == 200, merged.text
    records = await segment_records(common, 6)
    changes = sorted(
        (r["segment_id"], r["kind"], r["customer_id"], r["cause"])
        for r in records
        if r["cause"] != "event"
    )
    assert changes == [
        (buyers, "exit", "erased", "erasure"),
        (buyers, "exit", "merged", "merge"),
        (repeat, "enter", "kept", "merge"),  # the survivor is evaluated: two purchases now
    ]
    assert schema_errors(records) == []
    hooks = await deliveries(secret, 6)
    assert sorted((h["type"], h["customer_id"], h["cause"]) for h in hooks) == sorted(
        [
            *(("segment.entered", c, "event") for c in ("erased", "kept", "merged")),
            ("segment.exited", "erased", "erasure"),
            ("segment.exited", "merged", "merge"),
            ("segment.entered", "kept", "merge"),
        ]
    )
    async with db.connect() as conn:
        want = {(buyers, "kept"), (repeat, "kept")}
        assert await truth.open_spans(conn) == want
        assert await truth.brute_force(conn, datetime.now(UTC)) == want
        spans = (
            await conn.execute(
                text("SELECT customer_id, left_by FROM segment_memberships ORDER BY id")
            )
        ).all()
    assert [tuple(s) for s in spans if s[1] == "erasure"] == [(None, "erasure")]
    assert "erased" not in {s[0] for s in spans}


async def test_a_backfill_of_many_customers_does_not_stall_the_live_path(
    client: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    many = 100_000
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (customer_id, stage, stage_entered_at, first_seen_at,"
                " last_seen_at, first_source, purchases, events)"
                " SELECT 'bf' || lpad(n::text, 6, '0'), 'reach', :t, :t, :t, 'shop', n % 3, 1"
                " FROM generate_series(1, :n) AS n"
            ),
            {"t": DAY0, "n": many},
        )
    condition = {"fact": "purchases", "op": "ge", "value": 1}
    sid = await truth.define_now(db, "backfilled", condition, backfill=True)
    applied_while_running = 0
    n = 0
    while True:
        n += 1
        cid = f"live{n}"
        await send_events(
            common, event_doc("purchase", customer_id=cid, event_id=f"lv{n}", occurred_at=at(1))
        )

        async def seen(cid: str = cid) -> dict[str, Any] | None:
            return await read_customer(client, cid)

        customer = await eventually(seen)
        assert customer["stage"]
        async with db.connect() as conn:
            done, finished = (
                await conn.execute(
                    text("SELECT backfill_done, backfill_finished_at FROM segments WHERE id = :i"),
                    {"i": sid},
                )
            ).one()
        if finished is not None:
            break
        if done > 0:  # applied while the backfill was under way, not merely pending
            applied_while_running += 1
        assert n < 2000, "the backfill never finished"
    assert applied_while_running >= 1, "the backfill finished before any live event was applied"
    async with db.connect() as conn:
        want = await truth.brute_force(conn, datetime.now(UTC))
        assert await truth.open_spans(conn) == want
    assert len(want) == sum(1 for k in range(1, many + 1) if k % 3) + n
