"""The KPI reads: sums over planned segments (minute buckets, rollups, all-time totals), the
distinct sets, the write counters closed reads are cached under, and the cohort table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Table, and_, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.schema import (
    kpi_buckets,
    kpi_cohorts,
    kpi_day_versions,
    kpi_distinct,
    kpi_hour_versions,
    kpi_rollups,
)
from clm_metrics import distinct
from clm_metrics.distinct import Distinct
from clm_metrics.repository.rows import ANY
from clm_metrics.sums import ALL_TIME_METRICS, LEVEL_METRICS, TotalsKey
from clm_metrics.windows import EPOCH, Segment

#: ``levels``: the flows and the level metrics (what a window's end is read with).
Metrics = Literal["every", "levels", "all_time"]


def _filtered(table: Table, source: str | None, channel: str | None) -> list[Any]:
    where = []
    if source is not None:
        where.append(table.c.source == source)
    if channel is not None:
        where.append(table.c.channel == channel)
    return where


def _metric_filter(table: Table, metrics: Metrics) -> list[Any]:
    if metrics == "levels":
        return [or_(table.c.metric.like("flow:%"), table.c.metric.in_(LEVEL_METRICS))]
    if metrics == "all_time":
        return [or_(table.c.metric.like("flow:%"), table.c.metric.in_(ALL_TIME_METRICS))]
    return []


def _segment_select(
    segment: Segment,
    source: str | None,
    channel: str | None,
    metrics: Metrics = "every",
    part: int = 0,
) -> Any:
    table = kpi_buckets if segment.grain == "minute" else kpi_rollups
    c = table.c
    query = select(
        literal(part).label("part"), c.metric, c.source, c.channel, c.currency, c.value
    ).where(
        c.bucket_start >= segment.start,
        c.bucket_start < segment.end,
        *_filtered(table, source, channel),
    )
    if segment.grain != "minute":
        query = query.where(c.grain == segment.grain)
    return query.where(*_metric_filter(table, metrics))


def _all_time_select(source: str | None, channel: str | None, part: int = 0) -> Any:
    c = kpi_rollups.c
    return select(
        literal(part).label("part"), c.metric, c.source, c.channel, c.currency, c.value
    ).where(
        c.grain == "all",
        c.bucket_start == EPOCH,
        *_metric_filter(kpi_rollups, "all_time"),
        *_filtered(kpi_rollups, source, channel),
    )


async def _summed(
    conn: AsyncConnection, selects: Sequence[Any], parts: int = 1
) -> list[dict[TotalsKey, Decimal]]:
    """The tagged selects summed by ``part`` and key, in one statement (one round trip)."""
    out: list[dict[TotalsKey, Decimal]] = [{} for _ in range(parts)]
    if not selects:
        return out
    rows: Any = union_all(*selects) if len(selects) > 1 else selects[0]
    c = rows.subquery().c
    query = select(c.part, c.metric, c.source, c.channel, c.currency, func.sum(c.value)).group_by(
        c.part, c.metric, c.source, c.channel, c.currency
    )
    for part, m, s, ch, cu, v in await conn.execute(query):
        out[part][(m, s, ch, cu)] = Decimal(v)
    return out


async def range_totals(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
    metrics: Metrics = "every",
) -> dict[TotalsKey, Decimal]:
    """Sums over the planned segments, by (metric, source, channel, currency)."""
    selects = [_segment_select(s, source, channel, metrics) for s in segments]
    return (await _summed(conn, selects))[0]


async def all_time_totals(
    conn: AsyncConnection, *, source: str | None = None, channel: str | None = None
) -> dict[TotalsKey, Decimal]:
    return (await _summed(conn, [_all_time_select(source, channel)]))[0]


async def window_totals(
    conn: AsyncConnection,
    window: Sequence[Segment],
    after: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> tuple[dict[TotalsKey, Decimal], dict[TotalsKey, Decimal], dict[TotalsKey, Decimal]]:
    """In one statement: the sums over ``window``, the flows and levels over ``after`` and the
    all-time totals (what a window's KPIs read besides closed days and distinct sets)."""
    selects = [
        *(_segment_select(s, source, channel, "every", 0) for s in window),
        *(_segment_select(s, source, channel, "levels", 1) for s in after),
        _all_time_select(source, channel, 2),
    ]
    sums, flows_after, all_time = await _summed(conn, selects, 3)
    return sums, flows_after, all_time


async def merged_distinct(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    metrics: Sequence[str],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> Distinct:
    """The distinct sets over the segments (empty when ``metrics`` is)."""
    c = kpi_distinct.c
    if not segments or not metrics:
        return Distinct()
    wanted = [*metrics, "repeat_purchasers"] if "purchasers" in metrics else list(metrics)
    query = select(c.grain, c.bucket_start, c.metric, c.members).where(
        c.metric.in_(wanted),
        or_(
            *(
                and_(c.grain == s.grain, c.bucket_start >= s.start, c.bucket_start < s.end)
                for s in segments
            )
        ),
        c.source == (ANY if source is None else source),
        c.channel == (ANY if channel is None else channel),
    )
    rows = await conn.execute(query)
    return distinct.from_buckets(((g, b), m, distinct.loads(blob)) for g, b, m, blob in rows)


async def open_totals(
    conn: AsyncConnection,
    window: Sequence[Segment],
    after: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> tuple[dict[TotalsKey, Decimal], dict[TotalsKey, Decimal]]:
    """In one statement: every sum over ``window`` and the all-time metrics' (flows among
    them) over ``after``."""
    selects = [
        *(_segment_select(s, source, channel, "every", 0) for s in window),
        *(_segment_select(s, source, channel, "all_time", 1) for s in after),
    ]
    sums, later = await _summed(conn, selects, 2)
    return sums, later


async def all_time_and_since(
    conn: AsyncConnection,
    since: Sequence[Segment],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> tuple[dict[TotalsKey, Decimal], dict[TotalsKey, Decimal]]:
    """In one statement (one snapshot): the all-time totals and the all-time metrics' sums over
    ``since``, so their difference is exactly what lies before it."""
    selects = [
        _all_time_select(source, channel, 0),
        *(_segment_select(s, source, channel, "all_time", 1) for s in since),
    ]
    all_time, later = await _summed(conn, selects, 2)
    return all_time, later


async def day_versions(conn: AsyncConnection, first: date, last: date) -> dict[date, int]:
    """The write counters of the days ``first`` … ``last`` (a day never written is absent)."""
    c = kpi_day_versions.c
    rows = await conn.execute(select(c.day, c.version).where(c.day >= first, c.day <= last))
    return {day: int(version) for day, version in rows}


async def hour_versions(
    conn: AsyncConnection, ranges: Sequence[tuple[datetime, datetime]]
) -> dict[datetime, int]:
    """The write counters of the hours in the ``[start, end)`` ranges (absent: never written)."""
    c = kpi_hour_versions.c
    if not ranges:
        return {}
    rows = await conn.execute(
        select(c.hour, c.version).where(or_(*(and_(c.hour >= a, c.hour < b) for a, b in ranges)))
    )
    return {hour: int(version) for hour, version in rows}


async def change_count(conn: AsyncConnection) -> int:
    """How many writes were counted, ever: the sum of the day counters (every write bumps the
    days it touches, and counters only grow and are never pruned)."""
    c = kpi_day_versions.c
    return int(await conn.scalar(select(func.coalesce(func.sum(c.version), 0))) or 0)


async def closed_version(
    conn: AsyncConnection, open_days: tuple[date, date], open_hours: tuple[datetime, datetime]
) -> tuple[int, int]:
    """Change counters of what a rolling window keeps, in one statement: the sum of the day
    counters outside the open days ``[first, end)`` (today and the days ahead) and of the hour
    counters in ``[today, current hour)``. Counters only grow, so any write to a day or hour
    they cover changes the pair."""
    d, h = kpi_day_versions.c, kpi_hour_versions.c
    days = (
        select(func.coalesce(func.sum(d.version), 0))
        .where(or_(d.day < open_days[0], d.day >= open_days[1]))
        .scalar_subquery()
    )
    hours = (
        select(func.coalesce(func.sum(h.version), 0))
        .where(h.hour >= open_hours[0], h.hour < open_hours[1])
        .scalar_subquery()
    )
    row = (await conn.execute(select(days, hours))).one()
    return int(row[0]), int(row[1])


async def cohorts(conn: AsyncConnection, period: str) -> list[tuple[date, int, int]]:
    c = kpi_cohorts.c
    rows = await conn.execute(
        select(c.cohort, c.periods_since, c.customers)
        .where(c.period == period, c.customers != 0)
        .order_by(c.cohort, c.periods_since)
    )
    return [(cohort, int(n), int(v)) for cohort, n, v in rows]
