"""KPI snapshots: computed from the buckets for each standard window, served to Prometheus.

A background task refreshes the gauges every few seconds; a scrape only reads memory.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.kpis import WINDOWS, compute_kpis, window_bounds
from clm_common.lifecycle import Stage
from clm_metrics import repository

log = logging.getLogger(__name__)

_COUNT_GAUGES = {
    name: Gauge(f"clm_kpi_{name}", help_text, ["window"])
    for name, help_text in {
        "events": "Events in the window",
        "site_visits": "Site visits in the window",
        "ad_clicks": "Ad clicks in the window",
        "leads": "New leads (signups) in the window",
        "purchases": "Orders in the window",
        "new_customers": "First purchases in the window",
        "repeat_purchases": "Repeat purchases in the window",
        "reactivations": "Reactivations in the window",
        "refunds": "Refunds in the window",
    }.items()
}
REVENUE = Gauge("clm_kpi_revenue", "Revenue in the reporting currency in the window", ["window"])
AOV = Gauge("clm_kpi_average_order_value", "Average order value (reporting currency)", ["window"])
CUSTOMERS = Gauge("clm_kpi_customers", "Customers in each lifecycle stage now", ["stage"])
REFRESHED = Gauge("clm_kpi_refreshed_timestamp_seconds", "When the KPI gauges were refreshed")


async def kpis_for(
    engine: AsyncEngine,
    start: datetime,
    end: datetime,
    *,
    reporting_currency: str,
    source: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    async with engine.connect() as conn:
        totals = await repository.window_totals(conn, start, end, source=source, channel=channel)
        stages = await repository.customers_by_stage(conn)
    kpis = compute_kpis(totals, reporting_currency=reporting_currency)
    kpis["customers_by_stage"] = {stage.value: stages.get(stage.value, 0) for stage in Stage}
    return kpis


async def refresh_gauges(engine: AsyncEngine, reporting_currency: str) -> None:
    now = datetime.now(UTC)
    for window, span in WINDOWS.items():
        start, end = window_bounds(now, span)
        kpis = await kpis_for(engine, start, end, reporting_currency=reporting_currency)
        for name, gauge in _COUNT_GAUGES.items():
            gauge.labels(window).set(kpis[name])
        REVENUE.labels(window).set(float(Decimal(kpis["revenue"])))
        if kpis["average_order_value"] is not None:
            AOV.labels(window).set(float(Decimal(kpis["average_order_value"])))
        for stage, n in kpis["customers_by_stage"].items():
            CUSTOMERS.labels(stage).set(n)
    REFRESHED.set(now.timestamp())


async def refresh_forever(engine: AsyncEngine, reporting_currency: str, every_s: float) -> None:
    while True:
        try:
            await refresh_gauges(engine, reporting_currency)
        except Exception:
            log.warning("KPI gauge refresh failed", exc_info=True)
        await asyncio.sleep(every_s)
