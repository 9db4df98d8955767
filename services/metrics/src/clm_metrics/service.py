"""Reading KPIs: the ranges planned over the rollups are read through the repository (the I/O
lives here), and the plain sums handed to :mod:`clm_metrics.inputs` and
:mod:`clm_metrics.formulas` (pure)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_metrics.closed_days import ClosedDayCache, closed, days_of, hours_of, version_of
from clm_metrics.cohorts import retention_table
from clm_metrics.distinct import Distinct, combine
from clm_metrics.forecasts import Forecasts
from clm_metrics.formulas import WindowInputs, compute_kpis
from clm_metrics.inputs import ClosedWindow, assemble, closed_window, rolling
from clm_metrics.repository import reads
from clm_metrics.sums import Totals, added
from clm_metrics.windows import Segment, floor_to, plan

#: Events may be dated up to 24 h ahead; sums "from t on" read up to here.
FUTURE = timedelta(days=2)
DISTINCT = ("visitors", "purchasers", "repeat_purchasers")
MAX_POINTS = 400
T = TypeVar("T")
Counters = tuple[Mapping[date, int], Mapping[datetime, int]]
#: A closed segment's cache version and the keys of its sums and of its distinct sets.
SegmentKeys = tuple[int, tuple[Any, ...], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _Scope:
    """What a read is filtered by, and the distinct sets it counts."""

    source: str | None
    channel: str | None
    metrics: tuple[str, ...]


async def _on_own_connection(
    engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[T]]
) -> T:
    async with engine.connect() as conn:
        return await read(conn)


async def _distinct(conn: AsyncConnection, segments: Sequence[Segment], scope: _Scope) -> Distinct:
    """The scope's distinct sets over ``segments``, filtered as the scope is."""
    return await reads.merged_distinct(
        conn, segments, scope.metrics, source=scope.source, channel=scope.channel
    )


async def segment_counters(conn: AsyncConnection, segments: Sequence[Segment]) -> Counters:
    """The day counters of the day segments and the hour counters of the others."""
    day_segments = [s for s in segments if s.grain == "day"]
    days: Mapping[date, int] = {}
    if day_segments:
        first = min(days_of(s)[0] for s in day_segments)
        last = max(days_of(s)[1] for s in day_segments)
        days = await reads.day_versions(conn, first, last)
    hours = await reads.hour_versions(conn, [hours_of(s) for s in segments if s.grain != "day"])
    return days, hours


async def window_inputs(
    engine: AsyncEngine,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
    distinct: bool = True,
    cache: ClosedDayCache | None = None,
    forecasts: Forecasts | None = None,
) -> WindowInputs:
    """The window's sums, all-time sums, stage counts at both ends and distinct counts, and
    with ``forecasts`` the predictive KPIs (today's, for the window's purchasers).

    Two connections side by side: one statement for the sums (window, flows after it, all
    time), the distinct sets and counters on the other. With a ``cache``, a window that reaches the
    current hour is read as its open part (the current hour's minutes, and what lies after it)
    plus its closed part (everything before the current hour, all-time totals included) kept
    in the cache while the counters of every closed day and hour are unchanged; any other
    window takes its closed segments from the cache while their own counters are unchanged.
    """
    scope = _Scope(source, channel, DISTINCT if distinct else ())
    inputs = await _window_inputs(engine, start, end, now, scope, cache)
    if forecasts is None:
        return inputs
    predicted = await forecasts.predicted(engine, inputs.purchasers, now.astimezone(UTC).date())
    return replace(inputs, predicted=predicted)


async def _window_inputs(
    engine: AsyncEngine,
    start: datetime,
    end: datetime,
    now: datetime,
    scope: _Scope,
    cache: ClosedDayCache | None,
) -> WindowInputs:
    source, channel = scope.source, scope.channel
    if cache is not None and start <= floor_to(now, "hour") <= end:
        return await _rolling_inputs(engine, cache, start, end, now, scope)
    window = plan(start, end)
    kept = [s for s in window if closed(s, now)] if cache is not None else []
    fresh = [s for s in window if s not in kept]
    after = plan(end, max(floor_to(now, "day") + FUTURE, end))
    (totals, since_end, all_time), (sets, counters) = await asyncio.gather(
        _on_own_connection(
            engine,
            lambda c: reads.window_totals(c, fresh, after, source=source, channel=channel),
        ),
        _on_own_connection(engine, lambda c: _sets_and_counters(c, fresh, kept, scope)),
    )
    if cache is not None and kept:
        old_sums, old_sets = await _closed_reads(engine, cache, kept, counters, scope)
        totals = added([totals, *old_sums])
        sets = combine([sets, *old_sets])
    return assemble(totals, since_end, all_time, sets, scope.metrics)


async def _sets_and_counters(
    conn: AsyncConnection, fresh: Sequence[Segment], kept: Sequence[Segment], scope: _Scope
) -> tuple[Distinct, Counters]:
    """The counters of the ``kept`` (closed) segments, then the ``fresh`` ones' distinct sets."""
    counters = await segment_counters(conn, kept)
    return await _distinct(conn, fresh, scope), counters


async def _rolling_inputs(
    engine: AsyncEngine,
    cache: ClosedDayCache,
    start: datetime,
    end: datetime,
    now: datetime,
    scope: _Scope,
) -> WindowInputs:
    """A window that reaches the current hour: a warm read is the closed counters, the current
    hour's minutes and distinct sets, and what lies after the window (events dated ahead)."""
    hour, today = floor_to(now, "hour"), floor_to(now, "day")
    far = max(today + FUTURE, end)
    open_window, after = plan(hour, end), plan(end, far)
    (sums, later), (version, sets) = await asyncio.gather(
        _on_own_connection(
            engine,
            lambda c: reads.open_totals(
                c, open_window, after, source=scope.source, channel=scope.channel
            ),
        ),
        _on_own_connection(
            engine, lambda c: _version_and_sets(c, (today, hour, far), open_window, scope)
        ),
    )
    key = ("window", start, hour, far, scope.source, scope.channel, scope.metrics)
    part: ClosedWindow | None = cache.windows.get(key, version)
    if part is None:
        part = await _closed_window(engine, cache, plan(start, hour), plan(hour, far), scope)
        cache.windows.put(key, version, part)
    return rolling(part, sums, later, sets, scope.metrics)


async def _version_and_sets(
    conn: AsyncConnection,
    instants: tuple[datetime, datetime, datetime],
    open_window: Sequence[Segment],
    scope: _Scope,
) -> tuple[tuple[int, int], Distinct]:
    """The counters of a rolling window's closed part (``instants``: today, the current hour
    and how far it reads), then its open part's distinct sets."""
    today, hour, far = instants
    # the days wholly read afresh ([today, far) but today's closed hours, which have their
    # own counters) are left out; a day only partly before ``far`` stays counted
    version = await reads.closed_version(
        conn, (today.date(), floor_to(far, "day").date()), (today, hour)
    )
    return version, await _distinct(conn, open_window, scope)


async def _closed_window(
    engine: AsyncEngine,
    cache: ClosedDayCache,
    segments: Sequence[Segment],
    since: Sequence[Segment],
    scope: _Scope,
) -> ClosedWindow:
    """The closed part of a rolling window: its segments (each from the cache while its own
    counters are unchanged), and the all-time totals minus everything in ``since`` (the
    current hour on), read in one statement so both are of the same snapshot."""
    async with engine.connect() as conn:
        counters = await segment_counters(conn, segments)
    sums, sets = await _closed_reads(engine, cache, segments, counters, scope)
    async with engine.connect() as conn:
        all_time, later = await reads.all_time_and_since(
            conn, since, source=scope.source, channel=scope.channel
        )
    return closed_window(sums, sets, all_time, later)


async def _closed_reads(
    engine: AsyncEngine,
    cache: ClosedDayCache,
    segments: Sequence[Segment],
    counters: Counters,
    scope: _Scope,
) -> tuple[list[Totals], list[Distinct]]:
    """Sums and distinct sets of closed segments: cached while their days' or hours' counters are
    unchanged, otherwise read (after the counters were) on one connection and cached. Cached
    values are never mutated."""
    keys: list[SegmentKeys] = [
        (
            version_of(segment, *counters),
            ("sums", segment, scope.source, scope.channel),
            ("sets", segment, scope.source, scope.channel, scope.metrics),
        )
        for segment in segments
    ]
    sums: list[Totals | None] = [cache.get(key, version) for version, key, _ in keys]
    sets: list[Distinct | None] = [
        cache.get(key, version) if scope.metrics else Distinct() for version, _, key in keys
    ]
    misses = [i for i in range(len(segments)) if sums[i] is None or sets[i] is None]
    if misses:
        async with engine.connect() as conn:
            for i in misses:
                sums[i], sets[i] = await _read_closed(
                    conn, cache, segments[i], keys[i], (sums[i], sets[i]), scope
                )
    return [s for s in sums if s is not None], [r for r in sets if r is not None]


async def _read_closed(
    conn: AsyncConnection,
    cache: ClosedDayCache,
    segment: Segment,
    keys: SegmentKeys,
    cached: tuple[Totals | None, Distinct | None],
    scope: _Scope,
) -> tuple[Totals, Distinct]:
    """A closed segment's sums and sets, each read (and cached) unless ``cached``."""
    version, sums_key, sets_key = keys
    sums, sets = cached
    if sums is None:
        sums = await reads.range_totals(conn, [segment], source=scope.source, channel=scope.channel)
        cache.put(sums_key, version, sums)
    if sets is None:
        sets = await _distinct(conn, [segment], scope)
        cache.put(sets_key, version, sets)
    return sums, sets


async def series(
    engine: AsyncEngine,
    name: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    now: datetime,
    *,
    reporting_currency: str,
    source: str | None = None,
    channel: str | None = None,
    cache: ClosedDayCache | None = None,
    forecasts: Forecasts | None = None,
) -> list[dict[str, Any]]:
    """``name`` over ``[start, end)`` in steps (each point is that step's own KPI; a
    predictive one is today's prediction for the step's customers)."""
    points = []
    t = start
    while t < end:
        upper = min(t + step, end)
        inputs = await window_inputs(
            engine,
            t,
            upper,
            now,
            source=source,
            channel=channel,
            distinct=name in DISTINCT_KPIS,
            cache=cache,
            forecasts=forecasts if name in PREDICTED_KPIS else None,
        )
        value = compute_kpis(inputs, reporting_currency=reporting_currency)[name]
        points.append({"from": t.isoformat(), "to": upper.isoformat(), "value": value})
        t = upper
    return points


#: KPIs that need the distinct sets.
DISTINCT_KPIS = frozenset(
    {
        "unique_visitors",
        "conversion_rate_visitors",
        "purchasing_customers",
        "purchase_frequency",
        "repeat_purchase_rate",
        "clv_predicted",
    }
)
#: KPIs that need the current model.
PREDICTED_KPIS = frozenset({"clv_predicted", "expected_purchases_90d"})


async def cohort_table(conn: AsyncConnection, period: str) -> list[dict[str, Any]]:
    """The retention table of ``period`` (month or week) cohorts."""
    return retention_table(await reads.cohorts(conn, period))
