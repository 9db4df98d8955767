"""Poison records produced straight to the events topic between good ones (issue 28): records
that reach Postgres and are refused there fail their whole batch, which is bisected to find
them; each poison record goes to the DLQ with its reason, every good event is applied once and
the partitions catch up (before issue 28 such a batch was retried forever and its partition
stalled). Records the engine's decoder refuses (out of the shared bounds) are dead-lettered
too, without reaching Postgres.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.failures import classify
from clm_infra.kafka import topic_partitions
from clm_infra.schema import consumer_offsets, customer_events, customers
from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineBatch, StageEngineSettings
from tests.factories import event_doc
from tests.integration.apps import app_client
from tests.integration.conftest import eventually, produce, read_topic
from tests.pg_refusal import REFUSED, REFUSED_SQLSTATE, refuse_marked_events


def raw(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """A document as bytes on the topic, unvalidated (as a producer bypassing the ingest)."""
    key = str(doc.get("customer_id") or doc.get("anonymous_id") or "x")
    return key.encode(), orjson.dumps(doc)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


#: one customer's documents, each with whether it is poison
Docs = list[tuple[dict[str, Any], bool]]


def offset_16(cid: str) -> Docs:
    return [
        (event_doc("site_visit", customer_id=cid, occurred_at="2026-11-20T10:00:00+16:00"), True)
    ]


def year_1(cid: str) -> Docs:
    return [
        (event_doc("site_visit", customer_id=cid, occurred_at="0001-01-01T00:00:00+14:00"), True)
    ]


def deep_json(cid: str) -> Docs:
    return [(event_doc("site_visit", customer_id=cid, deep=nested(250)), True)]


def refused_by_pg(cid: str) -> Docs:
    """Three events Postgres refuses (the test's trigger) between two good ones of their
    customer: the same partition, the same batch."""
    return [
        (
            event_doc(
                "site_visit",
                customer_id=cid,
                event_id=f"{REFUSED}-{cid}-{i}" if i % 2 == 0 else f"good-{cid}-among-{i}",
                occurred_at=f"2026-11-20T10:00:0{i}Z",
            ),
            i % 2 == 0,
        )
        for i in range(5)
    ]


KINDS: dict[str, tuple[Callable[[str], Docs], tuple[str, ...]]] = {
    # kind: (documents of one customer, words one of which each poison one's DLQ reason holds)
    # out of the shared bounds: the engine's decoder refuses them (before the bounds, Postgres
    # refused the offset with 22009 and stalled the partition; the reducer failed on year 0)
    "offset_16": (offset_16, ("undecodable",)),
    "year_1": (year_1, ("undecodable",)),
    "deep_json": (deep_json, ("undecodable",)),
    # inserted into customer_events, refused there: the batch is bisected to find them
    "refused_by_pg": (refused_by_pg, (REFUSED_SQLSTATE,)),
}


@pytest.fixture
async def engine_app(common: CommonSettings, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    await refuse_marked_events(db)  # before the engine starts: every case has it
    settings = StageEngineSettings(batch=StageEngineBatch(records=50), stage_engine_lanes=1)
    app = create_app(settings)
    async with app_client(app, "http://engine") as c:
        yield c


async def log_end(common: CommonSettings) -> int:
    parts = (await topic_partitions(common.kafka, [common.topics.events]))[common.topics.events]
    consumer = AIOKafkaConsumer(bootstrap_servers=common.kafka.bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(common.topics.events, p) for p in parts])
    finally:
        await consumer.stop()
    return sum(ends.values())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_a_record_postgres_refuses_goes_to_the_dlq_and_the_rest_is_applied(
    kind: str, engine_app: httpx.AsyncClient, common: CommonSettings, db: AsyncEngine
) -> None:
    make, words = KINDS[kind]
    theirs = make("bad")
    bad = [d for d, poison in theirs if poison]
    # good events around the poison, on the poison's key (its partition) and on others
    good = [
        event_doc("site_visit", customer_id=cid, event_id=f"good-{cid}-{i}")
        for i in range(3)
        for cid in ("bad", "g1", "g2", "g3")
    ]
    items = [raw(d) for d in good[:6]] + [raw(d) for d, _ in theirs] + [raw(d) for d in good[6:]]
    await produce(common.kafka.bootstrap, common.topics.events, items)
    end = await log_end(common)

    async def caught_up() -> bool:
        async with db.connect() as conn:
            stored = await conn.execute(select(func.sum(consumer_offsets.c.next_offset)))
            return int(stored.scalar_one() or 0) == end

    await eventually(caught_up, timeout=40, every=0.5)
    async with db.connect() as conn:
        logged = [str(e) for (e,) in await conn.execute(select(customer_events.c.event_id))]
        events = {
            str(c): int(n)
            for c, n in await conn.execute(select(customers.c.customer_id, customers.c.events))
        }
    # each good event once (the poison customer's own among its poison too), no poison
    applied = [d["event_id"] for d in good] + [d["event_id"] for d, p in theirs if not p]
    assert sorted(logged) == sorted(applied)
    assert events == {"bad": 3 + len(theirs) - len(bad), "g1": 3, "g2": 3, "g3": 3}
    dead = await read_topic(common.kafka.bootstrap, common.topics.dlq, expect=len(bad))
    assert sorted(r.value for r in dead) == sorted(orjson.dumps(d) for d in bad)
    for record in dead:
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
    settings = StageEngineSettings(stage_engine_lanes=1, stage_engine_stall_s=2)
    app = create_app(settings)
    async with app_client(app, "http://engine") as http:
        await produce(
            common.kafka.bootstrap,
            common.topics.events,
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
                common.kafka.bootstrap,
                common.topics.events,
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
