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
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

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


KINDS: dict[str, tuple[Callable[[str], list[dict[str, Any]]], int]] = {
    # kind: (poison documents for one customer, how many of them are poison)
    "offset_16": (offset_16, 1),
    "year_1": (year_1, 1),
    "deep_json": (deep_json, 1),
    "revenue_overflow": (revenue_overflow, 1),  # the 101st purchase: sum >= 10^16
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
    from aiokafka import AIOKafkaConsumer, TopicPartition

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
    make, n_poison = KINDS[kind]
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
                select(customer_events.c.event_id).where(
                    customer_events.c.event_id.like("good-%")
                )
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
        assert reason, "a dead letter without its reason"
