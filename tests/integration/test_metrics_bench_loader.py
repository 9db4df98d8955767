"""The metrics bench's fast loader writes the tables the write path writes, for the same
records: every bucket, rollup, distinct set (by the ids its numbers stand for: numbers follow
arrival order), cohort and stage count equal (the change counters only cover the same days
and hours: they count writes, not contents)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.databases import plain_url
from bench.metrics_load import History, finish_all, prepare, write_part
from clm_infra.db import create_engine
from clm_metrics import distinct
from clm_metrics.handler import LifecycleHandler
from clm_simulator.journeys import generate
from tests.kpi_truth import record, replay
from tests.records import unkeyed

TABLES = {
    "kpi_buckets": "bucket_start, metric, source, channel, currency, value",
    "kpi_rollups": "grain, bucket_start, metric, source, channel, currency, value",
    "kpi_distinct": "grain, bucket_start, metric, source, channel, members",
    "metrics_customer_numbers": "customer_id",
    "metrics_customer_days": "number, day",
    "kpi_cohorts": "period, cohort, periods_since, customers",
    "metrics_cohort_activity": "period, customer_id, period_start",
    "metrics_processed": "record_id",
    "metrics_tickets": "customer_id, ticket_id, opened_at, solved_at, source, channel",
    "stage_counts": "stage, customers",
    "kpi_day_versions": "day",
    "kpi_hour_versions": "hour",
}


async def tables(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    out = {}
    for table, columns in TABLES.items():
        where = "WHERE customers <> 0" if table == "stage_counts" else ""
        rows = await conn.fetch(f"SELECT {columns} FROM {table} {where} ORDER BY {columns}")
        out[table] = [tuple(r) for r in rows]
    numbered = await conn.fetch("SELECT number, customer_id FROM metrics_customer_numbers")
    who = {number: customer for number, customer in numbered}
    out["metrics_customer_days"] = sorted((who[n], day) for n, day in out["metrics_customer_days"])
    out["kpi_distinct"] = [
        (*r[:5], tuple(sorted(who[n] for n in distinct.loads(r[5])))) for r in out["kpi_distinct"]
    ]
    return out


async def indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    )
    return [tuple(r) for r in rows]


async def test_the_fast_loader_writes_what_the_write_path_writes(database_url: str) -> None:
    now = datetime.now(UTC)
    parts = [
        [record(step) for step in replay(generate(seed, customers=40, now=now, days=120), now=now)]
        for seed in (1, 2)
    ]
    docs = [doc for part in parts for doc in part]

    engine = create_engine(database_url, pool_size=1)
    try:
        handler = LifecycleHandler()
        for i in range(0, len(docs), 37):  # many small batches, as a consumer commits them
            async with engine.begin() as conn:
                await handler(conn, unkeyed(docs[i : i + 37]))
    finally:
        await engine.dispose()

    conn = await asyncpg.connect(plain_url(database_url))
    try:
        written = await tables(conn)
        assert all(written[t] for t in TABLES), "the history fills every table"
        keys = await indexes(conn)
        await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
        # monthly staging partitions for the last 60 days: the older half of the history
        # lands in the default partition, summed as one
        start, end = (now - timedelta(days=60)).date(), now.date()
        await prepare(conn, start, end)
        for part in parts:  # two parts, as two loader processes write them
            history = History()
            assert history.add(part) == len(part)
            await write_part(conn, history)
        await finish_all(conn, start, end)
        assert await tables(conn) == written
        assert await indexes(conn) == keys, "the keys dropped while loading are back"
    finally:
        await conn.close()
