"""The sweeper's index (migration 0010) on real Postgres: partial, over the stages inactivity
moves on from, and the one the sweeper's own query reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.schema import customers
from clm_stage_engine.repository.customers import due


def _indexes(plan: object) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if "Index Name" in plan:
            found.add(plan["Index Name"])
        for value in plan.values():
            found |= _indexes(value)
    elif isinstance(plan, list):
        for value in plan:
            found |= _indexes(value)
    return found


async def test_the_sweepers_query_reads_the_partial_index_of_lapsing_stages(
    db: AsyncEngine,
) -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    query = select(customers.c.customer_id).where(
        due(now - timedelta(days=30), now - timedelta(days=90))
    )
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO customers (customer_id, stage, stage_entered_at, first_seen_at,"
                " last_seen_at, first_source) SELECT 'ix-' || g, CASE WHEN g % 10 = 0"
                " THEN 'retention' ELSE 'reach' END, now(), now(), now() - g * interval '1 day',"
                " 'shop' FROM generate_series(1, 2000) g"
            )
        )
        await conn.execute(text("ANALYZE customers"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"))).scalar_one()
        definition = (
            await conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_customers_lapsing'")
            )
        ).scalar_one()
        old = (
            await conn.execute(
                text("SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_customers_last_seen'")
            )
        ).scalar_one()
    plan = orjson.loads(plan) if isinstance(plan, str) else plan
    assert _indexes(plan) == {"ix_customers_lapsing"}
    assert "WHERE (stage = ANY (ARRAY['conversion'::text, 'retention'::text, 'loyalty'::text," in (
        definition
    )
    assert old == 0
