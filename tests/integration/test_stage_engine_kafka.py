"""The stage engine on real Kafka and Postgres: stages, history, dedupe, DLQ, outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from clm_infra.db import create_engine
from clm_infra.schema import (
    consumer_offsets,
    customers,
    outbox,
    outbox_batches,
    stage_transitions,
)
from clm_infra.settings import CommonSettings
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from tests.factories import event_doc
from tests.integration.apps import app_client, read_customer, running
from tests.integration.conftest import eventually, produce, read_topic, send_events, wire
from tests.keys import READ


@pytest.fixture
async def engine_app(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(StageEngineSettings())
    async with app_client(app, "http://engine") as c:
        yield c


async def test_events_move_customers_and_are_recorded(
    engine_app: httpx.AsyncClient, common: CommonSettings
) -> None:
    await send_events(
        common,
        event_doc(
            "site_visit",
            customer_id="c1",
            event_id="v1",
            occurred_at="2026-11-23T10:00:00Z",
        ),
        event_doc("signup", customer_id="c1", event_id="s1", occurred_at="2026-11-23T10:01:00Z"),
        event_doc("purchase", customer_id="c1", event_id="p1", occurred_at="2026-11-23T10:02:00Z"),
        event_doc("marketing_spend", customer_id=None, event_id="m1"),
    )

    async def converted() -> dict[str, Any] | None:
        c = await read_customer(engine_app, "c1")
        return c if c and c["stage"] == "conversion" else None

    c1 = await eventually(converted)
    assert c1["purchases"] == 1
    assert c1["revenue"] == "59.90"
    assert c1["stage_entered_at"] == "2026-11-23T10:02:00+00:00"
    history = (await engine_app.get("/v1/customers/c1/history", headers=READ)).json()
    assert [(t["from_stage"], t["to_stage"]) for t in history["transitions"]] == [
        (None, "reach"),
        ("reach", "acquisition"),
        ("acquisition", "conversion"),
    ]
    records = await read_topic(common.kafka.bootstrap, common.topics.lifecycle, expect=4)
    docs = [orjson.loads(r.value) for r in records]
    assert sorted(d["record_id"] for d in docs) == ["shop:m1", "shop:p1", "shop:s1", "shop:v1"]
    purchase = next(d for d in docs if d["record_id"] == "shop:p1")
    assert purchase["stage_before"] == "acquisition"
    assert purchase["first_purchase"] is True


async def test_unknown_customers_are_404_and_reads_need_a_token(
    engine_app: httpx.AsyncClient,
) -> None:
    missing = await engine_app.get("/v1/customers/nobody", headers=READ)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await engine_app.get("/v1/customers/nobody")).status_code == 401


async def test_duplicates_and_redelivery_change_nothing(
    engine_app: httpx.AsyncClient, common: CommonSettings
) -> None:
    purchase = wire(event_doc("purchase", customer_id="dup", event_id="same"))
    await produce(common.kafka.bootstrap, common.topics.events, [purchase, purchase])
    await eventually(lambda: read_customer(engine_app, "dup"))
    await produce(common.kafka.bootstrap, common.topics.events, [purchase])
    marker = wire(event_doc("site_visit", customer_id="dup-marker", event_id="mk"))
    await produce(common.kafka.bootstrap, common.topics.events, [marker])
    await eventually(lambda: read_customer(engine_app, "dup-marker"))

    engine = create_engine(common.database.url, pool_size=1)
    try:
        async with engine.connect() as conn:
            purchases = (
                await conn.execute(
                    select(customers.c.purchases).where(customers.c.customer_id == "dup")
                )
            ).scalar_one()
            moves = (
                await conn.execute(
                    select(func.count()).where(stage_transitions.c.customer_id == "dup")
                )
            ).scalar_one()
        assert purchases == 1
        assert moves == 1
    finally:
        await engine.dispose()


async def test_a_poison_record_goes_to_the_dlq_and_the_partition_flows_on(
    engine_app: httpx.AsyncClient, common: CommonSettings
) -> None:
    await produce(
        common.kafka.bootstrap,
        common.topics.events,
        [
            (b"p", b"{not json"),
            (b"p", orjson.dumps({"type": "teleport", "event_id": "x"})),
            wire(event_doc("site_visit", customer_id="p", event_id="after-poison")),
        ],
    )
    assert await eventually(lambda: read_customer(engine_app, "p"))
    dead = await read_topic(common.kafka.bootstrap, common.topics.dlq, expect=2)
    assert len(dead) == 2
    reasons = [dict(r.headers)["reason"].decode() for r in dead]
    assert all(reason.startswith("undecodable") for reason in reasons)
    assert {r.value for r in dead} == {
        b"{not json",
        orjson.dumps({"type": "teleport", "event_id": "x"}),
    }


async def test_stored_offsets_are_the_truth(common: CommonSettings) -> None:
    """Replaying the whole topic (stored offsets reset) counts nothing twice."""
    await produce(
        common.kafka.bootstrap,
        common.topics.events,
        [
            wire(event_doc("purchase", customer_id="r", event_id=f"r{i}", order_id=f"o{i}"))
            for i in range(5)
        ],
    )
    engine = create_engine(common.database.url, pool_size=1)

    async def purchases() -> int | None:
        async with engine.connect() as conn:
            return (
                await conn.execute(
                    select(customers.c.purchases).where(customers.c.customer_id == "r")
                )
            ).scalar_one_or_none()

    async def stored_offsets() -> int:
        async with engine.connect() as conn:
            total = await conn.execute(select(func.sum(consumer_offsets.c.next_offset)))
            return int(total.scalar_one() or 0)

    try:
        for replay in (False, True):
            if replay:
                async with engine.begin() as conn:
                    await conn.execute(update(consumer_offsets).values(next_offset=0))
            app = create_app(StageEngineSettings())
            async with running(app):
                await eventually(lambda: _equals(stored_offsets, 5))
                await eventually(lambda: _outbox_empty(engine))
            assert await purchases() == 5
    finally:
        await engine.dispose()


async def _equals(probe: Any, expected: Any) -> bool:
    return bool(await probe() == expected)


async def _outbox_empty(engine: Any) -> bool:
    async with engine.connect() as conn:
        counts = [
            (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (outbox, outbox_batches)
        ]
    return counts == [0, 0]


async def test_readiness(engine_app: httpx.AsyncClient) -> None:
    ready = await engine_app.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"postgres": "ok", "kafka": "ok", "consumer": "ok"}


async def test_a_big_batch_of_distinct_customers_is_applied(
    common: CommonSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of customers in one batch: statements stay under Postgres' bind limit."""
    monkeypatch.setenv("CLM_STAGE_ENGINE_BATCH_RECORDS", "3000")
    monkeypatch.setenv("CLM_STAGE_ENGINE_BATCH_WAIT_S", "2")
    docs = [event_doc("site_visit", customer_id=f"many-{i}", event_id=f"m{i}") for i in range(2500)]
    await produce(common.kafka.bootstrap, common.topics.events, [wire(d) for d in docs])
    engine = create_engine(common.database.url, pool_size=1)

    async def applied() -> bool:
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(customers))).scalar_one()
        return bool(n == 2500)

    try:
        app = create_app(StageEngineSettings())
        async with running(app):
            await eventually(applied, timeout=60)
    finally:
        await engine.dispose()
