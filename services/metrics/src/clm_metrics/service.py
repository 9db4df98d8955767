"""Reading KPIs: ranges planned over the rollups, then the pure formulas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_domain.lifecycle import Stage
from clm_metrics.closed_days import ClosedDayCache, closed, days_of, hours_of, version_of
from clm_metrics.distinct import Distinct, combine
from clm_metrics.formulas import MetricSums, Totals, WindowInputs, compute_kpis, stage_net
from clm_metrics.repository import reads
from clm_metrics.repository.rows import TotalsKey, is_all_time_metric, is_level_metric
from clm_metrics.tickets import LEVEL
from clm_metrics.windows import Segment, floor_to, plan

#: Events may be dated up to 24 h ahead; sums "from t on" read up to here.
FUTURE = timedelta(days=2)
DISTINCT = ("visitors", "purchasers", "repeat_purchasers")
MAX_POINTS = 400
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Retention:
    minute_days: int
    hour_days: int

    def align(self, at: datetime, now: datetime) -> datetime:
        """``at`` rounded down to the finest grain still kept at that age."""
        if at < now - timedelta(days=self.hour_days):
            return floor_to(at, "day")
        if at < now - timedelta(days=self.minute_days):
            return floor_to(at, "hour")
        return floor_to(at, "minute")


def stages_at(all_time: Totals, since: Totals) -> dict[str, int]:
    """Customers per stage at an instant: all-time net flows minus the flows after it."""
    now, after = stage_net(all_time), stage_net(since)
    return {s.value: now.get(s.value, 0) - after.get(s.value, 0) for s in Stage}


def level_at(all_time: Totals, since: Totals, metric: str) -> int:
    """A level metric (+1 / -1 changes) at an instant: all-time sum minus the sum after it."""
    before = sum((v for k, v in all_time.items() if k[0] == metric), Decimal(0))
    return int(before - sum((v for k, v in since.items() if k[0] == metric), Decimal(0)))


async def _on_own_connection(
    engine: AsyncEngine, read: Callable[[AsyncConnection], Awaitable[T]]
) -> T:
    async with engine.connect() as conn:
        return await read(conn)


Counters = tuple[Mapping[date, int], Mapping[datetime, int]]


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
) -> WindowInputs:
    """The window's sums, all-time sums, stage counts at both ends and distinct counts.

    Two connections side by side: one statement for the sums (window, flows after it, all
    time), the distinct sets and counters on the other. With a ``cache``, a window that reaches the
    current hour is read as its open part (the current hour's minutes, and what lies after it)
    plus its closed part (everything before the current hour, all-time totals included) kept
    in the cache while the counters of every closed day and hour are unchanged; any other
    window takes its closed segments from the cache while their own counters are unchanged.
    """
    if cache is not None and start <= floor_to(now, "hour") <= end:
        return await _rolling_inputs(
            engine, cache, start, end, now, source=source, channel=channel, distinct=distinct
        )
    far = max(floor_to(now, "day") + FUTURE, end)
    window = plan(start, end)
    kept = [s for s in window if closed(s, now)] if cache is not None else []
    fresh = [s for s in window if s not in kept]
    metrics = DISTINCT if distinct else ()

    async def sets_and_counters(
        conn: AsyncConnection,
    ) -> tuple[Distinct, Counters]:
        counters = await segment_counters(conn, kept)
        sets = await reads.merged_distinct(conn, fresh, metrics, source=source, channel=channel)
        return sets, counters

    (totals, since_end, all_time), (sets, counters) = await asyncio.gather(
        _on_own_connection(
            engine,
            lambda c: reads.window_totals(c, fresh, plan(end, far), source=source, channel=channel),
        ),
        _on_own_connection(engine, sets_and_counters),
    )
    if cache is not None and kept:
        old_sums, old_sets = await _closed_reads(
            engine, cache, kept, counters, source=source, channel=channel, metrics=metrics
        )
        totals = _added([totals, *old_sums])
        sets = combine([sets, *old_sets])
    return _inputs(totals, since_end, all_time, sets, metrics)


def _inputs(
    totals: Totals,
    since_end: Totals,
    all_time: Totals,
    sets: Distinct,
    metrics: Sequence[str],
    sums: MetricSums | None = None,
) -> WindowInputs:
    # [start, far) is the window plus [end, far): no second read of the window's rows
    since_start = dict(since_end)
    window_flows = (
        sums.entries("flow:")
        if sums is not None
        else [(k, v) for k, v in totals.items() if k[0].startswith("flow:")]
    )
    for key, value in window_flows:
        since_start[key] = since_start.get(key, Decimal(0)) + value
    return WindowInputs(
        totals=totals,
        stages_at_start=stages_at(all_time, since_start),
        stages_at_end=stages_at(all_time, since_end),
        open_tickets_at_end=level_at(all_time, since_end, LEVEL),
        all_time=all_time,
        distinct={m: n for m, n in sets.counts().items() if m in metrics},
        sums=sums,
    )


@dataclass(frozen=True, slots=True)
class _ClosedWindow:
    """A rolling window's part before the current hour: its sums and distinct sets, and the
    all-time totals before that hour."""

    totals: Totals
    sets: Distinct
    all_time: Totals
    sums: MetricSums  # ``totals`` indexed


async def _rolling_inputs(
    engine: AsyncEngine,
    cache: ClosedDayCache,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    source: str | None,
    channel: str | None,
    distinct: bool,
) -> WindowInputs:
    """A window that reaches the current hour: a warm read is the closed counters, the current
    hour's minutes and distinct sets, and what lies after the window (events dated ahead)."""
    hour, today = floor_to(now, "hour"), floor_to(now, "day")
    far = max(today + FUTURE, end)
    metrics = DISTINCT if distinct else ()
    open_window, after = plan(hour, end), plan(end, far)

    async def counters_and_sets(
        conn: AsyncConnection,
    ) -> tuple[tuple[int, int], Distinct]:
        # the days wholly read afresh ([today, far) but today's closed hours, which have their
        # own counters) are left out; a day only partly before ``far`` stays counted
        version = await reads.closed_version(
            conn, (today.date(), floor_to(far, "day").date()), (today, hour)
        )
        sets = await reads.merged_distinct(
            conn, open_window, metrics, source=source, channel=channel
        )
        return version, sets

    (sums, later), (version, sets) = await asyncio.gather(
        _on_own_connection(
            engine,
            lambda c: reads.open_totals(c, open_window, after, source=source, channel=channel),
        ),
        _on_own_connection(engine, counters_and_sets),
    )
    key = ("window", start, hour, far, source, channel, metrics)
    part: _ClosedWindow | None = cache.windows.get(key, version)
    if part is None:
        part = await _closed_window(
            engine,
            cache,
            plan(start, hour),
            plan(hour, far),
            source=source,
            channel=channel,
            metrics=metrics,
        )
        cache.windows.put(key, version, part)
    open_all_time = {k: v for k, v in _added([sums, later]).items() if is_all_time_metric(k[0])}
    return _inputs(
        _added([part.totals, sums]),
        {k: v for k, v in later.items() if is_level_metric(k[0])},
        _added([part.all_time, open_all_time]),
        combine([part.sets, sets]),
        metrics,
        part.sums.plus(sums),
    )


async def _closed_window(
    engine: AsyncEngine,
    cache: ClosedDayCache,
    segments: Sequence[Segment],
    since: Sequence[Segment],
    *,
    source: str | None,
    channel: str | None,
    metrics: tuple[str, ...],
) -> _ClosedWindow:
    """The closed part of a rolling window: its segments (each from the cache while its own
    counters are unchanged), and the all-time totals minus everything in ``since`` (the
    current hour on), read in one statement so both are of the same snapshot."""
    async with engine.connect() as conn:
        counters = await segment_counters(conn, segments)
    sums, sets = await _closed_reads(
        engine, cache, segments, counters, source=source, channel=channel, metrics=metrics
    )
    async with engine.connect() as conn:
        all_time, later = await reads.all_time_and_since(
            conn, since, source=source, channel=channel
        )
    before = dict(all_time)
    for key, value in later.items():
        before[key] = before.get(key, Decimal(0)) - value
    totals = _added(sums)
    return _ClosedWindow(totals, combine(sets), before, MetricSums(totals))


def _added(parts: Sequence[Totals]) -> dict[TotalsKey, Decimal]:
    """The parts summed key by key, into a new dict (a copy of the largest, plus the rest)."""
    if not parts:
        return {}
    largest = max(range(len(parts)), key=lambda i: len(parts[i]))
    out: dict[TotalsKey, Decimal] = dict(parts[largest])
    for i, part in enumerate(parts):
        if i != largest:
            for key, value in part.items():
                out[key] = out.get(key, Decimal(0)) + value
    return out


async def _closed_reads(
    engine: AsyncEngine,
    cache: ClosedDayCache,
    segments: Sequence[Segment],
    counters: Counters,
    *,
    source: str | None,
    channel: str | None,
    metrics: tuple[str, ...],
) -> tuple[list[Totals], list[Distinct]]:
    """Sums and distinct sets of closed segments: cached while their days' or hours' counters are
    unchanged, otherwise read (after the counters were) on one connection and cached. Cached
    values are never mutated."""
    keys = [
        (
            version_of(segment, *counters),
            ("sums", segment, source, channel),
            ("sets", segment, source, channel, metrics),
        )
        for segment in segments
    ]
    sums: list[Totals | None] = [cache.get(key, version) for version, key, _ in keys]
    sets: list[Distinct | None] = [
        cache.get(key, version) if metrics else Distinct() for version, _, key in keys
    ]
    misses = [i for i, segment in enumerate(segments) if sums[i] is None or sets[i] is None]
    if misses:
        async with engine.connect() as conn:
            for i in misses:
                version, sums_key, sets_key = keys[i]
                if sums[i] is None:
                    sums[i] = await reads.range_totals(
                        conn, [segments[i]], source=source, channel=channel
                    )
                    cache.put(sums_key, version, sums[i])
                if sets[i] is None:
                    sets[i] = await reads.merged_distinct(
                        conn, [segments[i]], metrics, source=source, channel=channel
                    )
                    cache.put(sets_key, version, sets[i])
    return [s for s in sums if s is not None], [r for r in sets if r is not None]


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
) -> list[dict[str, Any]]:
    """``name`` over ``[start, end)`` in steps (each point is that step's own KPI)."""
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


async def cohort_table(conn: AsyncConnection, period: str) -> list[dict[str, Any]]:
    rows = await reads.cohorts(conn, period)
    out: dict[Any, dict[str, Any]] = {}
    for cohort, since, customers in rows:
        entry = out.setdefault(
            cohort, {"cohort": cohort.isoformat(), "customers": 0, "periods": []}
        )
        if since == 0:
            entry["customers"] = customers
    for cohort, since, customers in rows:
        entry = out[cohort]
        size = entry["customers"]
        entry["periods"].append(
            {
                "periods_since": since,
                "purchasing_customers": customers,
                "share": None
                if not size
                else str((Decimal(customers) / size).quantize(Decimal("0.0001"))),
            }
        )
    return list(out.values())
