"""Reading KPIs: ranges planned over the rollups, then the pure formulas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.lifecycle import Stage
from clm_metrics import repository
from clm_metrics.formulas import Totals, WindowInputs, compute_kpis, lifecycle_map, stage_net
from clm_metrics.windows import floor_to, plan

#: Events may be dated up to 24 h ahead; sums "from t on" read up to here.
FUTURE = timedelta(days=2)
DISTINCT = ("visitors", "purchasers", "repeat_purchasers")
MAX_POINTS = 400


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


async def window_inputs(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
    distinct: bool = True,
) -> WindowInputs:
    far = max(floor_to(now, "day") + FUTURE, end)
    totals = await repository.range_totals(conn, plan(start, end), source=source, channel=channel)
    all_time = await repository.all_time_totals(conn, source=source, channel=channel)
    since_end = await repository.range_totals(
        conn, plan(end, far), source=source, channel=channel, metric_like="flow:%"
    )
    # [start, far) is the window plus [end, far): no second read of the window's rows
    since_start = dict(since_end)
    for key, value in totals.items():
        if key[0].startswith("flow:"):
            since_start[key] = since_start.get(key, Decimal(0)) + value
    counts: dict[str, int | None] = {}
    if distinct:
        counts.update(
            await repository.distinct_counts(
                conn, plan(start, end), DISTINCT, source=source, channel=channel
            )
        )
    return WindowInputs(
        totals=totals,
        stages_at_start=stages_at(all_time, since_start),
        stages_at_end=stages_at(all_time, since_end),
        all_time=all_time,
        distinct=counts,
    )


async def kpis(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    reporting_currency: str,
    source: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    inputs = await window_inputs(conn, start, end, now, source=source, channel=channel)
    return compute_kpis(inputs, reporting_currency=reporting_currency)


async def lifecycle(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    inputs = await window_inputs(
        conn, start, end, now, source=source, channel=channel, distinct=False
    )
    return lifecycle_map(inputs)


async def series(
    conn: AsyncConnection,
    name: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    now: datetime,
    *,
    reporting_currency: str,
    source: str | None = None,
    channel: str | None = None,
) -> list[dict[str, Any]]:
    """``name`` over ``[start, end)`` in steps (each point is that step's own KPI)."""
    points = []
    t = start
    while t < end:
        upper = min(t + step, end)
        inputs = await window_inputs(
            conn,
            t,
            upper,
            now,
            source=source,
            channel=channel,
            distinct=name in DISTINCT_KPIS,
        )
        value = compute_kpis(inputs, reporting_currency=reporting_currency)[name]
        points.append({"from": t.isoformat(), "to": upper.isoformat(), "value": value})
        t = upper
    return points


#: KPIs that need the distinct-count sketches.
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
    rows = await repository.cohorts(conn, period)
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
