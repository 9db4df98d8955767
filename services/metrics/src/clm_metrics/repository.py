"""All SQL of the metrics service. Repositories never commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Table, and_, func, literal, or_, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.schema import (
    kpi_buckets,
    kpi_cohorts,
    kpi_day_versions,
    kpi_hour_versions,
    kpi_rollups,
    kpi_sketches,
)
from clm_metrics import hll
from clm_metrics.buckets import BucketKey, SketchKey
from clm_metrics.windows import EPOCH, Grain, Segment, floor_to

TotalsKey = tuple[str, str, str, str]
ROLLUP_GRAINS: tuple[Grain, ...] = ("hour", "day")
#: The source/channel of the sketches merged over every source or channel (a control character
#: no event's source or channel can contain), so a query reads one sketch a bucket.
ANY = "\x1fany"

_CLAIM = text(
    """
    INSERT INTO metrics_processed (record_id)
    SELECT * FROM unnest(CAST(:ids AS text[]))
    ON CONFLICT DO NOTHING
    RETURNING record_id
    """
)


async def claim_records(conn: AsyncConnection, record_ids: Sequence[str]) -> set[str]:
    """Mark lifecycle records as counted; return those not counted before.

    Array parameters, not a multi-row VALUES: the statement's text is the same for any number
    of records, so it is compiled and prepared once (a VALUES list of each length is a new
    statement to compile, parse and plan on every micro-batch).
    """
    if not record_ids:
        return set()
    result = await conn.execute(_CLAIM, {"ids": list(record_ids)})
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


_UPSERT_MINUTES = text(
    """
    INSERT INTO kpi_buckets AS t (bucket_start, metric, source, channel, currency, value)
    SELECT * FROM unnest(
        CAST(:b AS timestamptz[]), CAST(:m AS text[]), CAST(:s AS text[]),
        CAST(:ch AS text[]), CAST(:cu AS text[]), CAST(:v AS numeric[]))
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (bucket_start, metric, source, channel, currency)
    DO UPDATE SET value = t.value + EXCLUDED.value
    """
)
_UPSERT_ROLLUPS = text(
    """
    INSERT INTO kpi_rollups AS t (grain, bucket_start, metric, source, channel, currency, value)
    SELECT * FROM unnest(
        CAST(:g AS text[]), CAST(:b AS timestamptz[]), CAST(:m AS text[]), CAST(:s AS text[]),
        CAST(:ch AS text[]), CAST(:cu AS text[]), CAST(:v AS numeric[]))
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (grain, bucket_start, metric, source, channel, currency)
    DO UPDATE SET value = t.value + EXCLUDED.value
    """
)


def _columns(items: Sequence[tuple[BucketKey, Decimal]]) -> dict[str, list[Any]]:
    return {
        "b": [k.bucket_start for k, _ in items],
        "m": [k.metric for k, _ in items],
        "s": [k.source for k, _ in items],
        "ch": [k.channel for k, _ in items],
        "cu": [k.currency for k, _ in items],
        "v": [v for _, v in items],
    }


_BUMP_DAYS = text(
    """
    INSERT INTO kpi_day_versions AS t (day, version)
    SELECT d, 1 FROM unnest(CAST(:d AS date[])) AS d ORDER BY 1
    ON CONFLICT (day) DO UPDATE SET version = t.version + 1
    """
)
_BUMP_HOURS = text(
    """
    INSERT INTO kpi_hour_versions AS t (hour, version)
    SELECT h, 1 FROM unnest(CAST(:h AS timestamptz[])) AS h ORDER BY 1
    ON CONFLICT (hour) DO UPDATE SET version = t.version + 1
    """
)


async def bump_versions(conn: AsyncConnection, touched: Iterable[datetime]) -> None:
    """Count a write to the (UTC) days and hours of ``touched``, in the writer's transaction:
    readers keep a closed day's or hour's sums only while its version is unchanged."""
    hours = sorted({floor_to(at, "hour") for at in touched})
    if hours:
        await conn.execute(_BUMP_DAYS, {"d": sorted({floor_to(h, "day").date() for h in hours})})
        await conn.execute(_BUMP_HOURS, {"h": hours})


async def add_counts(
    conn: AsyncConnection,
    increments: Mapping[BucketKey, Decimal],
    sketches: Mapping[SketchKey, set[str]],
    *,
    written: hll.LastWritten | None = None,
) -> None:
    """What a batch adds: to the minute buckets and their rollups (one array upsert per
    table, rows in a stable order) and the ids to the minute, hour and day sketches (rows
    locked in order, merged, written), with one version bump for the hours and days both
    touch. ``written``: the sketches this process wrote last (read back without inflating
    them)."""
    touched = [k.bucket_start for k in increments]
    touched.extend(k.bucket_start for k in sketches)
    await bump_versions(conn, touched)
    if increments:
        await conn.execute(_UPSERT_MINUTES, _columns(sorted(increments.items())))
        rolled = sorted(rollup(increments).items())
        await conn.execute(
            _UPSERT_ROLLUPS,
            {"g": [g for (g, _), _ in rolled], **_columns([(k, v) for (_, k), v in rolled])},
        )
    if sketches:
        await _write_sketches(conn, sketches, written or hll.LastWritten(0))


_ADD_STAGE_COUNTS = text(
    """
    INSERT INTO stage_counts AS t (stage, customers)
    SELECT * FROM unnest(CAST(:s AS text[]), CAST(:n AS bigint[])) ORDER BY 1
    ON CONFLICT (stage) DO UPDATE SET customers = t.customers + EXCLUDED.customers
    """
)


async def add_stage_counts(conn: AsyncConnection, deltas: Mapping[str, int]) -> None:
    if not deltas:
        return
    ordered = sorted(deltas.items())
    await conn.execute(
        _ADD_STAGE_COUNTS, {"s": [s for s, _ in ordered], "n": [n for _, n in ordered]}
    )


_SKETCH_KEYS = """unnest(CAST(:g AS text[]), CAST(:b AS timestamptz[]), CAST(:m AS text[]),
    CAST(:s AS text[]), CAST(:ch AS text[]))"""
_SKETCH_INIT = text(
    f"""
    INSERT INTO kpi_sketches (grain, bucket_start, metric, source, channel, registers)
    SELECT u.*, CAST(:empty AS bytea) FROM {_SKETCH_KEYS} AS u
    ON CONFLICT DO NOTHING
    """
)
_SKETCH_LOCK = text(
    f"""
    SELECT k.grain, k.bucket_start, k.metric, k.source, k.channel, k.registers
    FROM kpi_sketches AS k JOIN {_SKETCH_KEYS} AS u(g, b, m, s, ch)
      ON (k.grain, k.bucket_start, k.metric, k.source, k.channel) = (u.g, u.b, u.m, u.s, u.ch)
    ORDER BY 1, 2, 3, 4, 5
    FOR UPDATE OF k
    """
)
_SKETCH_WRITE = text(
    """
    UPDATE kpi_sketches AS k SET registers = u.r
    FROM unnest(CAST(:g AS text[]), CAST(:b AS timestamptz[]), CAST(:m AS text[]),
                CAST(:s AS text[]), CAST(:ch AS text[]), CAST(:r AS bytea[]))
         AS u(g, b, m, s, ch, r)
    WHERE (k.grain, k.bucket_start, k.metric, k.source, k.channel) = (u.g, u.b, u.m, u.s, u.ch)
    """
)


def _sketch_columns(keys: Sequence[SketchRow]) -> dict[str, list[Any]]:
    return {name: [k[i] for k in keys] for i, name in enumerate(("g", "b", "m", "s", "ch"))}


SketchRow = tuple[str, datetime, str, str, str]


def sketch_rows(
    items: Mapping[SketchKey, Iterable[str]], into: dict[SketchRow, set[str]] | None = None
) -> dict[SketchRow, set[str]]:
    """The ids each sketch row gets (``(grain, start, metric, source, channel)``): a minute
    bucket's ids go to its minute, hour and day, each also merged over every source, every
    channel and both. ``into``: add to these rows (returned)."""
    per_row: dict[SketchRow, set[str]] = {} if into is None else into
    for k, ids in items.items():
        for grain in ("minute", *ROLLUP_GRAINS):
            start = floor_to(k.bucket_start, grain)
            for source, channel in (
                (k.source, k.channel),
                (k.source, ANY),
                (ANY, k.channel),
                (ANY, ANY),
            ):
                row = (grain, start, k.metric, source, channel)
                per_row.setdefault(row, set()).update(ids)
    return per_row


async def _write_sketches(
    conn: AsyncConnection, items: Mapping[SketchKey, set[str]], last: hll.LastWritten
) -> None:
    per_row = sketch_rows(items)
    if not per_row:
        return
    keys = sorted(per_row)
    columns = _sketch_columns(keys)
    await conn.execute(_SKETCH_INIT, {**columns, "empty": hll.dumps(hll.empty())})
    # an id goes to 12 rows (3 grains x 4 source/channel merges): hashed once
    at = hll.positions(who for ids in items.values() for who in ids)
    written: list[SketchRow] = []
    blobs: list[bytes] = []
    for g, b, m, s, ch, blob in await conn.execute(_SKETCH_LOCK, columns):
        row = (g, b, m, s, ch)
        sketch = last.loads(row, blob)
        # a row its ids do not change keeps its bytes: no encoding, no new row version (ids
        # seen before; most ids of a busy hour's or day's registers raise nothing once filled)
        if hll.raise_at(sketch, [at[who] for who in per_row[row]]):
            written.append(row)
            blobs.append(hll.dumps(sketch))
            last.wrote(row, blobs[-1], sketch)
    if written:
        await conn.execute(_SKETCH_WRITE, {**_sketch_columns(written), "r": blobs})


_CLAIM_COHORT_ACTIVITY = text(
    """
    INSERT INTO metrics_cohort_activity (period, customer_id, period_start)
    SELECT * FROM unnest(CAST(:p AS text[]), CAST(:c AS text[]), CAST(:s AS date[]))
    ON CONFLICT DO NOTHING
    RETURNING period, customer_id, period_start
    """
)
_ADD_COHORTS = text(
    """
    INSERT INTO kpi_cohorts AS t (period, cohort, periods_since, customers)
    SELECT * FROM unnest(
        CAST(:p AS text[]), CAST(:c AS date[]), CAST(:n AS integer[]), CAST(:v AS bigint[]))
    ORDER BY 1, 2, 3
    ON CONFLICT (period, cohort, periods_since)
    DO UPDATE SET customers = t.customers + EXCLUDED.customers
    """
)


async def add_cohort_activity(
    conn: AsyncConnection, rows: Sequence[tuple[str, str, date, date]]
) -> None:
    """``(period, customer, period_start, cohort)``: count each customer once per period."""
    if not rows:
        return
    cohort_of = {(p, cust, start): cohort for p, cust, start, cohort in rows}
    counts: dict[tuple[str, date, int], int] = {}
    claimed = sorted(cohort_of)
    fresh = await conn.execute(
        _CLAIM_COHORT_ACTIVITY,
        {
            "p": [p for p, _, _ in claimed],
            "c": [c for _, c, _ in claimed],
            "s": [s for _, _, s in claimed],
        },
    )
    for p, cu, s in fresh:
        cohort = cohort_of[(p, cu, s)]
        key = (p, cohort, periods_between(p, cohort, s))
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    ordered = sorted(counts.items())
    await conn.execute(
        _ADD_COHORTS,
        {
            "p": [p for (p, _, _), _ in ordered],
            "c": [c for (_, c, _), _ in ordered],
            "n": [n for (_, _, n), _ in ordered],
            "v": [v for _, v in ordered],
        },
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


#: What the all-time totals are read for: current stages, open tickets, historical CLV.
ALL_TIME_METRICS = ("customer_revenue", "new_customers", "tickets_opened", "tickets_solved")
Metrics = Literal["every", "flows", "all_time"]


def is_all_time_metric(metric: str) -> bool:
    return metric.startswith("flow:") or metric in ALL_TIME_METRICS


def _metric_filter(table: Table, metrics: Metrics) -> list[Any]:
    if metrics == "flows":
        return [table.c.metric.like("flow:%")]
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
    """In one statement: the sums over ``window``, the flows over ``after`` and the all-time
    totals (what a window's KPIs read besides closed days and sketches)."""
    selects = [
        *(_segment_select(s, source, channel, "every", 0) for s in window),
        *(_segment_select(s, source, channel, "flows", 1) for s in after),
        _all_time_select(source, channel, 2),
    ]
    sums, flows_after, all_time = await _summed(conn, selects, 3)
    return sums, flows_after, all_time


async def merged_sketches(
    conn: AsyncConnection,
    segments: Sequence[Segment],
    metrics: Sequence[str],
    *,
    source: str | None = None,
    channel: str | None = None,
) -> dict[str, hll.Sketch]:
    """Each metric's sketch over the segments, merged (absent: no ids)."""
    c = kpi_sketches.c
    if not segments or not metrics:
        return {}
    query = select(c.metric, c.registers).where(
        c.metric.in_(list(metrics)),
        or_(
            *(
                and_(c.grain == s.grain, c.bucket_start >= s.start, c.bucket_start < s.end)
                for s in segments
            )
        ),
        c.source == (ANY if source is None else source),
        c.channel == (ANY if channel is None else channel),
    )
    rows: dict[str, list[hll.Sketch]] = {}
    for metric, blob in await conn.execute(query):
        rows.setdefault(metric, []).append(hll.loads(blob))
    return {metric: hll.merge(sketches) for metric, sketches in rows.items()}


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
