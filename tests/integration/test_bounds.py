"""Every bound of the contract fed from both sides, through the real ingest, Kafka, the stage
engine and Postgres: the value just inside is accepted (202) AND stored by the engine exactly;
the value just outside is a 422 naming the field (issue 28: what the ingest accepts, the
engine can store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain import bounds
from clm_infra.db import create_engine
from clm_infra.schema import customer_events, customers, processed_events
from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from clm_metrics.app import create_app as metrics_app
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.app import create_app as stage_engine_app
from clm_stage_engine.settings import StageEngineSettings
from tests.conftest import alembic_upgrade
from tests.factories import event_doc
from tests.integration.apps import app_client
from tests.integration.conftest import eventually
from tests.integration.ingest_server import ingest_client
from tests.keys import ADMIN, READ, WRITE, WRITE_KEY

MAX = format(bounds.MONEY_MAX, "f")  # 99999999999999.9999


@pytest.fixture
async def ingest(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with ingest_client(IngestSettings(ingest_rate_limit_per_s=0)) as client:
        yield client


@pytest.fixture
async def engine(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = stage_engine_app(StageEngineSettings())
    async with app_client(app, "http://engine") as client:
        yield client


def nested(levels: int) -> Any:
    """A JSON value ``levels`` containers deep."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


async def accepted(ingest: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    response = await ingest.post("/v1/events", json=doc, headers=WRITE)
    assert response.status_code == 202, response.text


async def refused(ingest: httpx.AsyncClient, body: Any, field: str) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = await ingest.post(
        "/v1/events", content=content, headers={**WRITE, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field], response.text


async def stored(db: AsyncEngine, customer_id: str) -> dict[str, Any]:
    async def row() -> dict[str, Any] | None:
        async with db.connect() as conn:
            found = (
                await conn.execute(select(customers).where(customers.c.customer_id == customer_id))
            ).first()
        return dict(found._mapping) if found is not None else None

    return await eventually(row, timeout=30)


async def test_timestamps_at_their_bounds_are_stored_and_beyond_them_refused(
    ingest: httpx.AsyncClient, engine: httpx.AsyncClient, db: AsyncEngine
) -> None:
    # the earliest instant, written with the widest offset each way
    await accepted(
        ingest,
        event_doc("site_visit", customer_id="t-east", occurred_at="1970-01-01T14:00:00+14:00"),
    )
    await accepted(
        ingest,
        event_doc("site_visit", customer_id="t-west", occurred_at="1969-12-31T10:00:00-14:00"),
    )
    await accepted(
        ingest, event_doc("signup", customer_id="t-plus14", occurred_at="2026-11-23T10:00:00+14:00")
    )
    spend = event_doc(
        "marketing_spend",
        event_id="spend-late",
        period_start="9899-12-31T23:59:59.999999Z",
        period_end="9899-12-31T23:59:59.999999Z",
    )
    await accepted(ingest, spend)

    for cid in ("t-east", "t-west"):
        row = await stored(db, cid)
        assert row["first_seen_at"] == bounds.TIME_MIN
    row = await stored(db, "t-plus14")
    assert row["first_seen_at"].isoformat() == "2026-11-22T20:00:00+00:00"
    answer = await engine.get("/v1/customers/t-east", headers=READ)
    assert answer.json()["first_seen_at"] == "1970-01-01T00:00:00+00:00"

    async def spend_applied() -> bool:
        async with db.connect() as conn:
            hit = await conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.event_id == "spend-late"
                )
            )
            return hit.first() is not None

    await eventually(spend_applied, timeout=30)

    await refused(
        ingest,
        event_doc("site_visit", occurred_at="1970-01-01T13:59:59.999999+14:00"),
        "occurred_at",
    )
    await refused(
        ingest, event_doc("site_visit", occurred_at="2026-12-07T10:00:00+16:00"), "occurred_at"
    )
    await refused(
        ingest, event_doc("site_visit", occurred_at="2026-12-07T10:00:00+14:01"), "occurred_at"
    )
    await refused(
        ingest, event_doc("site_visit", occurred_at="0001-01-01T00:00:00+14:00"), "occurred_at"
    )
    late = event_doc(
        "marketing_spend", period_start="2026-11-01T00:00:00Z", period_end="9900-01-01T00:00:00Z"
    )
    await refused(ingest, late, "properties.period_end")


async def test_money_at_its_bound_sums_exactly_past_the_old_column(
    ingest: httpx.AsyncClient, engine: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """101 purchases of the largest amount: 10**16 and more, past the numeric(20,4) the
    revenue column was (an overflow stalled the engine); stored to the last place."""
    events = [
        event_doc("purchase", customer_id="m-rich", amount=MAX, order_id=f"o-{i}")
        for i in range(101)
    ]
    answer = await ingest.post("/v1/events/batch", json={"events": events}, headers=WRITE)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 101
    await accepted(ingest, event_doc("refund", customer_id="m-rich", amount=MAX))
    await accepted(ingest, event_doc("refund", customer_id="m-rich", amount=MAX))

    async def all_applied() -> dict[str, Any] | None:
        row = await stored(db, "m-rich")
        return row if row["purchases"] == 101 and row["refunds"] == 2 else None

    row = await eventually(all_applied, timeout=60)
    assert row["revenue"] == 101 * bounds.MONEY_MAX == Decimal("10099999999999999.9899")
    assert row["refunded"] == 2 * bounds.MONEY_MAX
    read = (await engine.get("/v1/customers/m-rich", headers=READ)).json()
    assert Decimal(read["revenue"]) == 101 * bounds.MONEY_MAX

    await refused(ingest, event_doc("purchase", amount="100000000000000"), "properties.amount")
    await refused(ingest, event_doc("refund", amount="100000000000000.0000"), "properties.amount")
    await refused(ingest, event_doc("purchase", amount="1.00001"), "properties.amount")
    await refused(ingest, event_doc("purchase", amount="-0.0001"), "properties.amount")


async def test_json_depth_at_its_bound_is_stored_and_beyond_it_refused(
    ingest: httpx.AsyncClient, engine: httpx.AsyncClient, db: AsyncEngine
) -> None:
    # the event object is level 1, properties level 2, an unknown property's value level 3
    await accepted(ingest, event_doc("custom", customer_id="d-deep", deep=nested(30)))
    await accepted(ingest, event_doc("identify", customer_id="d-traits", traits={"x": nested(29)}))
    assert (await stored(db, "d-deep"))["events"] == 1
    assert (await stored(db, "d-traits"))["events"] == 1

    await refused(ingest, event_doc("custom", deep=nested(31)), "properties")
    await refused(ingest, event_doc("identify", traits={"x": nested(30)}), "properties.traits")
    # deeper than the JSON parser goes: still the contract's 422, not "not JSON"
    await refused(ingest, b'{"events": ' + b"[" * 2000 + b"]" * 2000 + b"}", "body")

    # a batch: the valid events go on, the too-deep one is refused by index (was a 500)
    batch = [
        event_doc("site_visit", customer_id="d-batch-a"),
        event_doc("custom", customer_id="d-batch-x", deep=nested(300)),
        event_doc("identify", customer_id="d-batch-b", traits={"x": nested(300)}),
        event_doc("site_visit", customer_id="d-batch-c"),
    ]
    answer = await ingest.post("/v1/events/batch", json={"events": batch}, headers=WRITE)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert [e["index"] for e in body["events"]] == [0, 3]
    assert [(r["index"], r["errors"][0]["field"]) for r in body["rejected"]] == [
        (1, "properties"),
        (2, "properties.traits"),
    ]
    await stored(db, "d-batch-a")
    await stored(db, "d-batch-c")


async def test_every_accepted_id_can_be_read_and_erased(
    ingest: httpx.AsyncClient, engine: httpx.AsyncClient, db: AsyncEngine
) -> None:
    longest = "i" * bounds.MAX_ID_LENGTH
    odd = "ü %?#.;=+&é..x"  # nothing a path segment cannot carry once percent-encoded
    for cid in (longest, odd):
        await accepted(ingest, event_doc("signup", customer_id=cid))
        await stored(db, cid)
        read = await engine.get(f"/v1/customers/{quote(cid, safe='')}", headers=READ)
        assert read.status_code == 200, read.text
        assert read.json()["customer_id"] == cid
    erased = await engine.delete(f"/v1/customers/{quote(odd, safe='')}", headers=ADMIN)
    assert erased.status_code == 200, erased.text

    for field in ("customer_id", "anonymous_id", "event_id"):
        for bad in ("a/b", "a\x00b", "a\x1fb", "a\x7fb", "a\x9fb", "..", ".", "i" * 201):
            await refused(ingest, {**event_doc("signup"), field: bad}, field)
    await refused(ingest, event_doc("purchase", order_id="o/1"), "properties.order_id")
    await refused(ingest, event_doc("referral", referred_id="\x00"), "properties.referred_id")
    await refused(ingest, event_doc("ad_click", campaign="a\x00b"), "properties.campaign")


async def test_segment_and_webhook_entry_points_keep_the_same_bounds(
    ingest: httpx.AsyncClient,
) -> None:
    basic = httpx.BasicAuth(WRITE_KEY, "")
    deep = {"userId": "s-1", "event": "Thing", "properties": {"x": nested(300)}}
    answer = await ingest.post("/v1/track", json=deep, auth=basic)
    assert answer.status_code == 400
    assert "properties.x" in answer.json()["message"]
    slash = await ingest.post("/v1/track", json={"userId": "a/b", "event": "Thing"}, auth=basic)
    assert slash.status_code == 400
    assert "customer_id" in slash.json()["message"]
    offset = {"userId": "s-1", "event": "Thing", "timestamp": "2026-11-23T10:00:00+16:00"}
    late = await ingest.post("/v1/track", json=offset, auth=basic)
    assert late.status_code == 400
    assert "occurred_at" in late.json()["message"]


async def test_the_metrics_service_refuses_times_beyond_the_bounds(common: CommonSettings) -> None:
    app = metrics_app(MetricsSettings())
    async with app_client(app, "http://metrics") as client:
        for name, value in (
            ("from", "0001-01-01T00:00:00+14:00"),
            ("from", "2026-11-23T00:00:00+16:00"),
            ("to", "9999-12-31T23:59:59Z"),
            ("to", "9999-12-31T23:59:59-14:00"),
        ):
            params = {
                "from": "2026-11-22T00:00:00Z",
                "to": "2026-11-23T00:00:00Z",
                name: value,
            }
            for path in ("/v1/kpis", "/v1/lifecycle/map", "/v1/kpis/revenue/series"):
                answer = await client.get(path, params=params, headers=READ)
                assert answer.status_code == 422, (path, params, answer.text)
                assert [e["field"] for e in answer.json()["errors"]] == [name]
        edge = {"from": "1970-01-01T00:00:00Z", "to": "1970-01-02T00:00:00Z"}
        answer = await client.get("/v1/kpis", params=edge, headers=READ)
        assert answer.status_code == 200, answer.text


async def test_a_history_stored_before_the_bounds_is_still_refolded(
    ingest: httpx.AsyncClient, engine: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """A late event makes the engine refold the customer from its stored events; one stored
    before these bounds (here a C1 character and JSON 50 deep) must not stall that."""
    signup = event_doc("signup", customer_id="legacy-1", occurred_at="2026-11-23T10:00:00Z")
    await accepted(ingest, signup)
    await accepted(
        ingest, event_doc("site_visit", customer_id="legacy-1", occurred_at="2026-11-23T11:00:00Z")
    )

    async def both() -> bool:
        events: int = (await stored(db, "legacy-1"))["events"]
        return events == 2

    await eventually(both, timeout=30)
    legacy = {
        **signup,
        "source": "shop",
        "channel": "e\x85mail",
        "properties": {"plan": "free", "deep": nested(50)},
    }
    async with db.begin() as conn:
        changed = await conn.execute(
            update(customer_events)
            .where(customer_events.c.event_id == signup["event_id"])
            .values(payload=orjson.dumps(legacy))
        )
        assert changed.rowcount == 1
    late = event_doc("purchase", customer_id="legacy-1", occurred_at="2026-11-23T09:00:00Z")
    await accepted(ingest, late)

    async def refolded() -> dict[str, Any] | None:
        row = await stored(db, "legacy-1")
        return row if row["events"] == 3 and row["purchases"] == 1 else None

    row = await eventually(refolded, timeout=30)
    assert row["first_seen_at"].isoformat() == "2026-11-23T09:00:00+00:00"


SUM_COLUMNS = (
    ("customers", "revenue"),
    ("customers", "refunded"),
    ("kpi_buckets", "value"),
    ("kpi_rollups", "value"),
)


async def _types_and_files(conn: Any) -> dict[str, tuple[str, int]]:
    out = {}
    for table, column in SUM_COLUMNS:
        found = await conn.execute(
            text(
                "SELECT format_type(atttypid, atttypmod), pg_relation_filenode(attrelid) "
                "FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = :c"
            ),
            {"t": table, "c": column},
        )
        kind, filenode = found.one()
        out[f"{table}.{column}"] = (kind, filenode)
    return out


async def test_migration_0011_widens_the_sums_in_the_catalogue_only(bare_database: str) -> None:
    """The sum columns become numeric(1000,4) without a table rewrite (same files), keep
    their rows, then hold a sum past the old bound; downgrading narrows them back."""
    await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", "0010_lapsing_index")
    db = create_engine(bare_database, pool_size=1)
    largest = Decimal("9999999999999999.9999")  # numeric(20,4)'s largest
    insert = text(
        "INSERT INTO customers (customer_id, stage, stage_entered_at, first_seen_at, "
        "last_seen_at, first_source, revenue) VALUES ('c', 'reach', now(), now(), now(), "
        "'shop', :r)"
    )
    try:
        async with db.begin() as conn:
            await conn.execute(insert, {"r": largest})
            before = await _types_and_files(conn)
        assert {kind for kind, _ in before.values()} == {"numeric(20,4)", "numeric(28,4)"}
        await db.dispose()  # statements prepared on the old types are invalid after it
        await asyncio.to_thread(alembic_upgrade, bare_database)
        async with db.begin() as conn:
            after = await _types_and_files(conn)
            assert {kind for kind, _ in after.values()} == {"numeric(1000,4)"}
            assert {k: f for k, (_, f) in after.items()} == {k: f for k, (_, f) in before.items()}
            await conn.execute(
                text("UPDATE customers SET revenue = revenue + :r"), {"r": bounds.MONEY_MAX}
            )
            revenue = (await conn.execute(text("SELECT revenue FROM customers"))).scalar_one()
            assert revenue == largest + bounds.MONEY_MAX
            await conn.execute(text("UPDATE customers SET revenue = :r"), {"r": largest})
        await db.dispose()
        await asyncio.to_thread(alembic_upgrade, bare_database, "downgrade", "0010_lapsing_index")
        async with db.connect() as conn:
            back = await _types_and_files(conn)
            revenue = (await conn.execute(text("SELECT revenue FROM customers"))).scalar_one()
        assert {kind for kind, _ in back.values()} == {"numeric(20,4)", "numeric(28,4)"}
        assert revenue == largest
    finally:
        await db.dispose()
