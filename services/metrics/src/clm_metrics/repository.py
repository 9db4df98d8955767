"""All SQL of the metrics service. Repositories never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Table, and_, bindparam, func, or_, select, union_all, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.schema import (
    kpi_buckets,
    kpi_cohorts,
    kpi_rollups,
    kpi_sketches,
    metrics_cohort_activity,
    metrics_processed,
    stage_counts,
)
from clm_metrics import hll
from clm_metrics.buckets import BucketKey, SketchKey
from clm_metrics.windows import EPOCH, Grain, Segment, floor_to

T = TypeVar("T")

TotalsKey = tuple[str, str, str, str]
ROLLUP_GRAINS: tuple[Grain, ...] = ("hour", "day")
#: Rows per multi-row statement: asyncpg allows 32767 parameters a statement.
CHUNK_ROWS = 4000


def chunks(rows: Sequence[T]) -> list[Sequence[T]]:
    return [rows[i : i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]


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


def rollup(increments: Mapping[BucketKey, Decimal]) -> dict[tuple[str, BucketKey], Decimal]:
    """The minute increments summed per hour, per day and all time."""
    out: dict[tuple[str, BucketKey], Decimal] = {}
    for k, v in increments.items():
        for grain in (*ROLLUP_GRAINS, "all"):
            start = EPOCH if grain == "all" else floor_to(k.bucket_start, grain)  # type: ignore[arg-type]
            key = (grain, BucketKey(start, k.metric, k.source, k.channel, k.currency))
            out[key] = out.get(key, Decimal(0)) + v
    return out


async def add_to_buckets(conn: AsyncConnection, increments: Mapping[BucketKey, Decimal]) -> None:
    """Minute buckets and their rollups: one upsert per table, rows in a stable order."""
    if not increments:
        return
    minute_rows = [
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
    for part in chunks(minute_rows):
        stmt = insert(kpi_buckets).values(list(part))
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["bucket_start", "metric", "source", "channel", "currency"],
                set_={"value": kpi_buckets.c.value + stmt.excluded.value},
            )
        )
    rollup_rows = [
        {
            "grain": grain,
            "bucket_start": k.bucket_start,
            "metric": k.metric,
            "source": k.source,
            "channel": k.channel,
            "currency": k.currency,
            "value": v,
        }
        for (grain, k), v in sorted(rollup(increments).items())
    ]
    for part in chunks(rollup_rows):
        rolled = insert(kpi_rollups).values(list(part))
        await conn.execute(
            rolled.on_conflict_do_update(
                index_elements=["grain", "bucket_start", "metric", "source", "channel", "currency"],
                set_={"value": kpi_rollups.c.value + rolled.excluded.value},
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


async def add_to_sketches(conn: AsyncConnection, items: Mapping[SketchKey, set[str]]) -> None:
    """Add ids to the minute, hour and day sketches (rows locked, merged, written back)."""
    per_row: dict[tuple[str, datetime, str, str, str], set[str]] = {}
    for k, ids in items.items():
        for grain in ("minute", *ROLLUP_GRAINS):
            row = (grain, floor_to(k.bucket_start, grain), k.metric, k.source, k.channel)
            per_row.setdefault(row, set()).update(ids)
    if not per_row:
        return
    keys = sorted(per_row)
    empty = hll.dumps(hll.empty())
    cols = ("grain", "bucket_start", "metric", "source", "channel")
    c = kpi_sketches.c
    updates = []
    for part in chunks(keys):
        await conn.execute(
            insert(kpi_sketches)
            .values([{**dict(zip(cols, k, strict=True)), "registers": empty} for k in part])
            .on_conflict_do_nothing()
        )
        locked = await conn.execute(
            select(c.grain, c.bucket_start, c.metric, c.source, c.channel, c.registers)
            .where(
                or_(
                    *(
                        and_(
                            c.grain == g,
                            c.bucket_start == b,
                            c.metric == m,
                            c.source == s,
                            c.channel == ch,
                        )
                        for g, b, m, s, ch in part
                    )
                )
            )
            .order_by(c.grain, c.bucket_start, c.metric, c.source, c.channel)
            .with_for_update()
        )
        for g, b, m, s, ch, blob in locked:
            registers = hll.add(hll.loads(blob), per_row[(g, b, m, s, ch)])
            updates.append(
                {"g": g, "b": b, "m": m, "s": s, "ch": ch, "registers": hll.dumps(registers)}
            )
    await conn.execute(
        update(kpi_sketches)
        .where(
            c.grain == bindparam("g"),
            c.bucket_start == bindparam("b"),
            c.metric == bindparam("m"),
            c.source == bindparam("s"),
            c.channel == bindparam("ch"),
        )
        .values(registers=bindparam("registers")),
        updates,
    )


async def add_cohort_activity(
    conn: AsyncConnection, rows: Sequence[tuple[str, str, date, date]]
) -> None:
    """``(period, customer, period_start, cohort)``: count each customer once per period."""
    if not rows:
        return
    cohort_of = {(p, cust, start): cohort for p, cust, start, cohort in rows}
    counts: dict[tuple[str, date, int], int] = {}
    for part in chunks(sorted(cohort_of)):
        fresh = await conn.execute(
            insert(metrics_cohort_activity)
            .values([{"period": p, "customer_id": cu, "period_start": s} for p, cu, s in part])
            .on_conflict_do_nothing()
            .returning(
                metrics_cohort_activity.c.period,
                metrics_cohort_activity.c.customer_id,
                metrics_cohort_activity.c.period_start,
            )
        )
        for p, cu, s in fresh:
            cohort = cohort_of[(p, cu, s)]
            key = (p, cohort, periods_between(p, cohort, s))
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    stmt = insert(kpi_cohorts).values(
        [
            {"period": p, "cohort": c, "periods_since": n, "customers": v}
            for (p, c, n), v in sorted(counts.items())
        ]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["period", "cohort", "periods_since"],
            set_={"customers": kpi_cohorts.c.customers + stmt.excluded.customers},
        )
    )


def periods_between(period: str, cohort: date, start: date) -> int:
    if period == "month":
        return (start.year - cohort.year) * 12 + start.month - cohort.month
    return (start - cohort).days // 7


def _filtered(table: Table, source: str | None, channel: str | None) -> list[Any]:
    where = []
    if source is not None:
        where.append(table.c.source == source)
    if channel is not None:
        where.append(table.c.channel == channel)
    return where


def _segment_select(
    segment: Segment, source: str | None, channel: str | None, metric_like: str | None
) -> Any:
    table = kpi_buckets if segment.grain == "minute" else kpi_rollups
    c = table.c
    query = select(c.metric, c.source, c.channel, c.currency, c.value).where(
        c.bucket_start >= segment.start,
        c.bucket_start < segment.end,
        *_filtered(table, source, channel),
    )
    if segment.grain != "minute":
        query = query.where(c.grain == segment.grain)
    if metric_like is not None:
        query = query.where(c.metric.like(metric_like))
    return query


async def range_totals(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
    metric_like: str | None = None,
) -> dict[TotalsKey, Decimal]:
    """Sums over the planned segments, by (metric, source, channel, currency)."""
    if not segments:
        return {}
    parts = union_all(
        *(_segment_select(s, source, channel, metric_like) for s in segments)
    ).subquery()
    query = select(
        parts.c.metric, parts.c.source, parts.c.channel, parts.c.currency, func.sum(parts.c.value)
    ).group_by(parts.c.metric, parts.c.source, parts.c.channel, parts.c.currency)
    return {(m, s, ch, cu): Decimal(v) for m, s, ch, cu, v in await conn.execute(query)}


async def all_time_totals(
    conn: AsyncConnection, *, source: str | None = None, channel: str | None = None
) -> dict[TotalsKey, Decimal]:
    c = kpi_rollups.c
    query = (
        select(c.metric, c.source, c.channel, c.currency, func.sum(c.value))
        .where(c.grain == "all", c.bucket_start == EPOCH, *_filtered(kpi_rollups, source, channel))
        .group_by(c.metric, c.source, c.channel, c.currency)
    )
    return {(m, s, ch, cu): Decimal(v) for m, s, ch, cu, v in await conn.execute(query)}


async def series_rows(
    conn: AsyncConnection,
    grain: Grain,
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
) -> list[tuple[datetime, TotalsKey, Decimal]]:
    """Every bucket of one grain in ``[start, end)``."""
    table = kpi_buckets if grain == "minute" else kpi_rollups
    c = table.c
    query = select(c.bucket_start, c.metric, c.source, c.channel, c.currency, c.value).where(
        c.bucket_start >= start, c.bucket_start < end, *_filtered(table, source, channel)
    )
    if grain != "minute":
        query = query.where(c.grain == grain)
    return [(b, (m, s, ch, cu), Decimal(v)) for b, m, s, ch, cu, v in await conn.execute(query)]


async def distinct_count(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    metric: str,
    *,
    source: str | None = None,
    channel: str | None = None,
) -> int:
    """HyperLogLog estimate of the distinct ids of ``metric`` over the segments."""
    c = kpi_sketches.c
    if not segments:
        return 0
    query = select(c.registers).where(
        c.metric == metric,
        or_(
            *(
                and_(c.grain == s.grain, c.bucket_start >= s.start, c.bucket_start < s.end)
                for s in segments
            )
        ),
        *_filtered(kpi_sketches, source, channel),
    )
    blobs = (await conn.execute(query)).scalars().all()
    return hll.estimate(hll.merge(hll.loads(b) for b in blobs))


async def customers_by_stage(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(stage_counts.c.stage, stage_counts.c.customers))
    return {stage: int(n) for stage, n in rows}


async def cohorts(conn: AsyncConnection, period: str) -> list[tuple[date, int, int]]:
    c = kpi_cohorts.c
    rows = await conn.execute(
        select(c.cohort, c.periods_since, c.customers)
        .where(c.period == period)
        .order_by(c.cohort, c.periods_since)
    )
    return [(cohort, int(n), int(v)) for cohort, n, v in rows]


async def prune(conn: AsyncConnection, *, minutes_before: datetime, hours_before: datetime) -> int:
    """Drop minute buckets and sketches older than their retention (hours and days stay)."""
    n = 0
    for stmt in (
        kpi_buckets.delete().where(kpi_buckets.c.bucket_start < minutes_before),
        kpi_sketches.delete().where(
            kpi_sketches.c.grain == "minute", kpi_sketches.c.bucket_start < minutes_before
        ),
        kpi_rollups.delete().where(
            kpi_rollups.c.grain == "hour", kpi_rollups.c.bucket_start < hours_before
        ),
        kpi_sketches.delete().where(
            kpi_sketches.c.grain == "hour", kpi_sketches.c.bucket_start < hours_before
        ),
    ):
        n += (await conn.execute(stmt)).rowcount
    return n
