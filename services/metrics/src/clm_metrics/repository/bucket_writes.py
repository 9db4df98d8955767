"""A batch's counting writes: its records claimed, its bucket increments (minute rows and
their rollups), the write counters of what it touches, and the stage counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_metrics.buckets import BucketKey
from clm_metrics.distinct import NumberCache
from clm_metrics.members import DistinctKey, Leaving
from clm_metrics.repository.distinct_writes import (
    Leavers,
    add_members,
    customer_numbers,
    forget,
    leaving_numbers,
    remove_leavers,
)
from clm_metrics.repository.rows import bucket_columns, rollup
from clm_metrics.windows import floor_to

_CLAIM = text(
    """
    INSERT INTO metrics_processed (record_id)
    SELECT * FROM unnest(CAST(:ids AS text[]))
    ON CONFLICT DO NOTHING
    RETURNING record_id
    """
)


async def claim_records(conn: AsyncConnection, record_ids: Sequence[str]) -> set[str]:
    """Mark lifecycle records as counted; return those not counted before (array parameters:
    one prepared statement for any batch size, see ``docs/performance.md``)."""
    if not record_ids:
        return set()
    result = await conn.execute(_CLAIM, {"ids": list(record_ids)})
    return {r.record_id for r in result}


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
    members: Sequence[tuple[DistinctKey, str]] = (),
    *,
    leaving: Sequence[Leaving] = (),
    numbers: NumberCache | None = None,
) -> None:
    """What a batch adds: to the minute buckets and their rollups (one array upsert per
    table, rows in a stable order) and the customer numbers to the minute, hour and day
    distinct sets (rows locked in order, merged, written); then the profiles ``leaving``
    (erased, merged, anonymised) cleared from or moved in the distinct sets of the days they
    are in. One version bump, first, for every hour and day any of it touches (so writers that
    meet on a row meet first on its day's counter, locked in order). ``members``: one ``(key,
    customer id)`` per visit or order (ids numbered by :func:`customer_numbers`, with the
    ``numbers`` cache)."""
    cache = numbers if numbers is not None else NumberCache(0)
    survivors = [gone.into for gone in leaving if gone.into is not None]
    number = await customer_numbers(conn, [*(who for _, who in members), *survivors], cache)
    leavers = await leaving_numbers(conn, leaving, number)
    days = _rewritten_days(leavers, members, number)
    await bump_versions(conn, _touched(increments, members, days))
    await _add_sums(conn, increments)
    if members:
        await add_members(conn, [(key, number[who]) for key, who in members])
    if leaving:
        await remove_leavers(conn, days, leavers)
        await forget(conn, leaving, cache)


def _rewritten_days(
    leavers: Leavers, members: Sequence[tuple[DistinctKey, str]], number: Mapping[str, int]
) -> list[datetime]:
    """The days the leaving profiles are in, and those this batch adds them to."""
    if not leavers.erased and not leavers.moved:
        return leavers.days
    out = {*leavers.erased, *leavers.moved}
    added = (floor_to(k.bucket_start, "day") for k, who in members if number[who] in out)
    return sorted({*leavers.days, *added})


def _touched(
    increments: Mapping[BucketKey, Decimal],
    members: Sequence[tuple[DistinctKey, str]],
    days: Sequence[datetime],
) -> list[datetime]:
    """The instants a batch writes at; a rewritten day's every hour (readers keep closed hours,
    and minutes, by hour counters)."""
    touched = [k.bucket_start for k in increments]
    touched.extend(k.bucket_start for k, _ in members)
    touched.extend(day + timedelta(hours=h) for day in days for h in range(24))
    return touched


async def _add_sums(conn: AsyncConnection, increments: Mapping[BucketKey, Decimal]) -> None:
    """The increments into the minute buckets, then their rollups."""
    if not increments:
        return
    await conn.execute(_UPSERT_MINUTES, bucket_columns(sorted(increments.items())))
    rolled = sorted(rollup(increments).items())
    await conn.execute(
        _UPSERT_ROLLUPS,
        {"g": [g for (g, _), _ in rolled], **bucket_columns([(k, v) for (_, k), v in rolled])},
    )


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
