"""All SQL of the metrics service. Repositories never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.schema import kpi_buckets, metrics_processed, stage_counts
from clm_metrics.buckets import BucketKey


async def claim_records(conn: AsyncConnection, record_ids: Sequence[str]) -> set[str]:
    """Mark lifecycle records as counted; return those not counted before."""
    if not record_ids:
        return set()
    result = await conn.execute(
        insert(metrics_processed)
        .values([{"record_id": r} for r in record_ids])
        .on_conflict_do_nothing()
        .returning(metrics_processed.c.record_id)
    )
    return {r.record_id for r in result}


async def add_to_buckets(conn: AsyncConnection, increments: Mapping[BucketKey, Decimal]) -> None:
    """One upsert for the whole batch, rows in a stable order (no deadlocks)."""
    if not increments:
        return
    stmt = insert(kpi_buckets).values(
        [
            {
                "bucket_start": k.bucket_start,
                "metric": k.metric,
                "source": k.source,
                "channel": k.channel,
                "currency": k.currency,
                "value": v,
            }
            for k, v in sorted(increments.items())
        ]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["bucket_start", "metric", "source", "channel", "currency"],
            set_={"value": kpi_buckets.c.value + stmt.excluded.value},
        )
    )


async def add_stage_counts(conn: AsyncConnection, deltas: Mapping[str, int]) -> None:
    if not deltas:
        return
    stmt = insert(stage_counts).values(
        [{"stage": s, "customers": d} for s, d in sorted(deltas.items())]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["stage"],
            set_={"customers": stage_counts.c.customers + stmt.excluded.customers},
        )
    )


async def window_totals(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
) -> dict[tuple[str, str], Decimal]:
    query = (
        select(kpi_buckets.c.metric, kpi_buckets.c.currency, func.sum(kpi_buckets.c.value))
        .where(kpi_buckets.c.bucket_start >= start, kpi_buckets.c.bucket_start < end)
        .group_by(kpi_buckets.c.metric, kpi_buckets.c.currency)
    )
    if source is not None:
        query = query.where(kpi_buckets.c.source == source)
    if channel is not None:
        query = query.where(kpi_buckets.c.channel == channel)
    return {(m, c): Decimal(v) for m, c, v in await conn.execute(query)}


async def customers_by_stage(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(stage_counts.c.stage, stage_counts.c.customers))
    return {stage: int(n) for stage, n in rows}
