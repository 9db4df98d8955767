"""Records the stage engine decodes but Postgres (or the engine's own arithmetic) refuses,
produced straight to the events topic between good ones: the failing batch is bisected, each
such record goes to the DLQ with its reason, every good event is applied once and the
partitions catch up (issue 28: before, the batch was retried forever and its partition
stalled)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.failures import classify
from clm_common.kafka import topic_partitions
from clm_common.schema import consumer_offsets, customer_events, customers
from clm_common.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.conftest import eventually, produce, read_topic

MAX_MONEY = "99999999999999.9999"  # the largest amount the contract accepts (18 digits)


def raw(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """A document as bytes on the topic, unvalidated (as a producer bypassing the ingest)."""
    key = str(doc.get("customer_id") or doc.get("anonymous_id") or "x")
    return key.encode(), orjson.dumps(doc)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


def offset_16(cid: str) -> list[dict[str, Any]]:
    return [event_doc("site_visit", customer_id=cid, occurred_at="2026-11-20T10:00:00+16:00")]


def year_1(cid: str) -> list[dict[str, Any]]:
    return [event_doc("site_visit", customer_id=cid, occurred_at="0001-01-01T00:00:00+14:00")]


def deep_json(cid: str) -> list[dict[str, Any]]:
    return [event_doc("site_visit", customer_id=cid, deep=nested(250))]


def revenue_overflow(cid: str) -> list[dict[str, Any]]:
    """Each purchase within the contract; their sum past the revenue column's 16 digits."""
    return [
        event_doc(
            "purchase",
            customer_id=cid,
            event_id=f"{cid}-{i}",
            order_id=f"{cid}-o{i}",
            amount=MAX_MONEY,
            currency="USD",
            occurred_at=f"2026-11-20T10:{i // 60:02d}:{i % 60:02d}Z",
        )
        for i in range(101)
    ]


KINDS: dict[str, tuple[Callable[[str], list[dict[str, Any]]], int, tuple[str, ...]]] = {
    # kind: (poison documents for one customer, how many of them are poison, words one of
    # which its DLQ reason holds). Before issue 28, offset_16 and revenue_overflow stalled
    # their partition for good; the engine already dead-lettered the other two (the decoder
    # refuses JSON nested ~200 deep, the reducer fails on year 0 in UTC).
    "offset_16": (offset_16, 1, ("22009", "undecodable")),
    "year_1": (year_1, 1, ("reducer", "undecodable", "22008")),
    "deep_json": (deep_json, 1, ("undecodable",)),
    # the 101st purchase: the customer's revenue past 10^16
    "revenue_overflow": (revenue_overflow, 1, ("22003", "reducer")),
}


@pytest.fixture
async def engine_app(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    settings = StageEngineSettings(stage_engine_batch_records=50, stage_engine_lanes=1)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as c:
            yield c


async def log_end(common: CommonSettings) -> int:
    parts = (await topic_partitions(common.kafka_bootstrap, [common.topic_events]))[
        common.topic_events
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=common.kafka_bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(common.topic_events, p) for p in parts])
    finally:
        await consumer.stop()
    return sum(ends.values())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_record_postgres_refuses_goes_to_the_dlq_and_the_rest_is_applied(
    kind: str, engine_app: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    make, n_poison, words = KINDS[kind]
    bad = make("bad")
    # good events around the poison, on the poison's key (its partition) and on others
    good = [
        event_doc("site_visit", customer_id=cid, event_id=f"good-{cid}-{i}")
        for i in range(3)
        for cid in ("bad", "g1", "g2", "g3")
    ]
    items = [raw(d) for d in good[:6]] + [raw(d) for d in bad] + [raw(d) for d in good[6:]]
    await produce(common.kafka_bootstrap, common.topic_events, items)
    end = await log_end(common)

    async def caught_up() -> bool:
        async with db.connect() as conn:
            stored = await conn.execute(select(func.sum(consumer_offsets.c.next_offset)))
            return int(stored.scalar_one() or 0) == end

    await eventually(caught_up, timeout=40, every=0.5)
    async with db.connect() as conn:
        logged = [
            str(e)
            for (e,) in await conn.execute(
                select(customer_events.c.event_id).where(customer_events.c.event_id.like("good-%"))
            )
        ]
        events = {
            str(c): int(n)
            for c, n in await conn.execute(select(customers.c.customer_id, customers.c.events))
        }
    assert sorted(logged) == sorted(d["event_id"] for d in good)  # each good event once
    assert all(events[c] == 3 for c in ("g1", "g2", "g3"))
    dead = await read_topic(common.kafka_bootstrap, common.topic_dlq, expect=n_poison)
    assert len(dead) == n_poison
    bad_values = {orjson.dumps(d) for d in bad}
    for record in dead:
        assert record.value in bad_values
        reason = dict(record.headers)["reason"].decode()
        assert any(w in reason for w in words), reason


async def failure_of(db: AsyncEngine, *statements: str) -> Exception:
    try:
        async with db.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    except Exception as exc:
        return exc
    raise AssertionError(f"{statements} did not fail")


async def test_postgres_errors_are_classified_through_sqlalchemy(db: AsyncEngine) -> None:
    overflow = classify(await failure_of(db, "SELECT 1e17::numeric(20, 4)"))
    assert (overflow.permanent, overflow.sqlstate) == (True, "22003")
    offset = classify(await failure_of(db, "SELECT '2026-11-20T10:00:00+16:00'::timestamptz"))
    assert (offset.permanent, offset.sqlstate) == (True, "22009")
    cancelled = classify(await failure_of(db, "SET statement_timeout = 50", "SELECT pg_sleep(1)"))
    assert (cancelled.permanent, cancelled.sqlstate) == (False, "57014")


@pytest.mark.timeout(120)
async def test_a_lane_that_cannot_advance_fails_readiness_and_recovers(
    common: CommonSettings, db: AsyncEngine
) -> None:
    """A lock held elsewhere (transient: the batch waits, then is retried) keeps a lane from
    advancing: after the stall limit /readyz answers 503 naming it; released, ready again."""
    settings = StageEngineSettings(stage_engine_lanes=1, stage_engine_stall_seconds=2)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as http:
            await produce(
                common.kafka_bootstrap,
                common.topic_events,
                [raw(event_doc("site_visit", customer_id="first"))],
            )

            async def applied() -> bool:
                async with db.connect() as conn:
                    row = await conn.execute(
                        select(customers.c.events).where(customers.c.customer_id == "first")
                    )
                    return row.scalar_one_or_none() == 1

            await eventually(applied, timeout=30)
            assert (await http.get("/readyz")).status_code == 200
            async with db.connect() as locker:
                await locker.execute(text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
                await produce(
                    common.kafka_bootstrap,
                    common.topic_events,
                    [raw(event_doc("site_visit", customer_id="blocked"))],
                )

                async def stalled() -> dict[str, Any] | None:
                    answer = await http.get("/readyz")
                    body: dict[str, Any] = answer.json()
                    return body if answer.status_code == 503 else None

                body = await eventually(stalled, timeout=30, every=0.2)
                said = body["checks"]["consumer"]
                assert said.startswith("stalled: consumer 0 partition "), said
                assert "(lag 1) since " in said
                await locker.rollback()  # the lock goes: the lane moves on

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, timeout=30, every=0.2)
