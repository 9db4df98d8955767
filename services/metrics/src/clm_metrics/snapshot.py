"""KPI gauges for Prometheus, refreshed from the database into memory every few seconds.

A scrape only reads memory. Labels are bounded: ``window`` (the five standard windows),
``stage`` / ``from`` / ``to`` (the seven stages), ``channel`` (a configured set plus ``other``)
and ``source`` (the top N by visits plus ``other``). A KPI that is unknown (a ratio over 0) has
no sample at all rather than a misleading 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.kpis import WINDOWS, floor_minute, window_bounds
from clm_domain.lifecycle import Stage
from clm_metrics import service
from clm_metrics.closed_days import ClosedDayCache
from clm_metrics.forecasts import Forecasts
from clm_metrics.formulas import compute_kpis, lifecycle_map
from clm_metrics.repository import predictions, reads
from clm_metrics.windows import Retention

log = logging.getLogger(__name__)

OTHER = "other"

#: KPI name → (metric name, help). Counts and amounts over a window.
WINDOWED: dict[str, tuple[str, str]] = {
    "events": ("clm_kpi_events", "Events applied in the window"),
    "site_visits": ("clm_kpi_site_visits", "Site visits in the window"),
    "ad_clicks": ("clm_kpi_ad_clicks", "Ad clicks in the window"),
    "unique_visitors": ("clm_kpi_unique_visitors", "Distinct visitors in the window (exact)"),
    "leads": ("clm_kpi_leads", "New leads in the window"),
    "converted_leads": ("clm_kpi_converted_leads", "Leads of the window that converted"),
    "lead_conversion_rate": ("clm_kpi_lead_conversion_ratio", "Converted leads / leads"),
    "marketing_spend": ("clm_kpi_marketing_spend", "Marketing spend (reporting currency)"),
    "cac": ("clm_kpi_customer_acquisition_cost", "Spend / new customers (reporting currency)"),
    "new_customers": ("clm_kpi_new_customers", "First purchases in the window"),
    "conversion_rate_visitors": ("clm_kpi_visitor_conversion_ratio", "New customers / visitors"),
    "conversion_rate_leads": ("clm_kpi_lead_to_customer_ratio", "New customers / new leads"),
    "purchases": ("clm_kpi_purchases", "Orders in the window"),
    "revenue": ("clm_kpi_revenue", "Revenue in the reporting currency"),
    "average_order_value": ("clm_kpi_average_order_value", "Revenue / orders"),
    "purchase_frequency": ("clm_kpi_purchase_frequency", "Orders per purchasing customer"),
    "refunds": ("clm_kpi_refunds", "Refunds in the window"),
    "refund_rate": ("clm_kpi_refund_ratio", "Refunds / orders"),
    "repeat_purchases": ("clm_kpi_repeat_purchases", "Second or later purchases"),
    "repeat_purchase_rate": (
        "clm_kpi_repeat_purchase_ratio",
        "Purchasing customers with 2 or more purchases in the window / purchasing customers",
    ),
    "churned": ("clm_kpi_churned_customers", "Customers who churned in the window"),
    "churn_rate": ("clm_kpi_churn_ratio", "Churned / active customers at the window start"),
    "retention_rate": ("clm_kpi_retention_ratio", "(E - N) / S over the window"),
    "reactivations": ("clm_kpi_reactivations", "Lapsed customers who bought again"),
    "csat": ("clm_kpi_csat_ratio", "Share of 4-5 satisfaction answers"),
    "support_tickets_opened": ("clm_kpi_support_tickets_opened", "Tickets opened"),
    "nps": ("clm_kpi_nps", "Net promoter score (-100..100)"),
    "nps_responses": ("clm_kpi_nps_responses", "NPS answers in the window"),
    "reviews": ("clm_kpi_reviews", "Reviews in the window"),
    "average_rating": ("clm_kpi_average_rating", "Average review rating (1-5)"),
    "referrals": ("clm_kpi_referrals", "Referrals in the window"),
    "clv_predicted": (
        "clm_kpi_clv_predicted",
        "Mean predicted CLV (BG/NBD x Gamma-Gamma, the model's horizon) of the window's "
        "purchasing customers in the reporting currency",
    ),
}
_WINDOWED_GAUGES = {k: Gauge(name, text, ["window"]) for k, (name, text) in WINDOWED.items()}
OPEN_TICKETS = Gauge("clm_kpi_open_support_tickets", "Support tickets open now")
CLV = Gauge("clm_kpi_clv_historical", "Lifetime revenue per customer (reporting currency)")
EXPECTED_PURCHASES = Gauge(
    "clm_kpi_expected_purchases_90d",
    "Purchases the customers who ever purchased are expected to make in the next 90 days "
    "(BG/NBD, the current model)",
)
CUSTOMERS = Gauge("clm_kpi_customers", "Customers in each lifecycle stage now", ["stage"])
VISITS_BY_CHANNEL = Gauge(
    "clm_kpi_site_visits_by_channel", "Site visits by channel", ["window", "channel"]
)
VISITS_BY_SOURCE = Gauge(
    "clm_kpi_site_visits_by_source", "Site visits by source (top sources)", ["window", "source"]
)
CAC_BY_CHANNEL = Gauge(
    "clm_kpi_customer_acquisition_cost_by_channel",
    "Channel spend / customers first touched there",
    ["window", "channel"],
)
CLV_BY_CHANNEL = Gauge(
    "clm_kpi_clv_historical_by_channel",
    "Lifetime revenue per customer by first channel",
    ["channel"],
)
TRANSITIONS = Gauge(
    "clm_kpi_transitions", "Customers moved between stages in the window", ["window", "from", "to"]
)
STAY = Gauge(
    "clm_kpi_stage_median_duration_seconds",
    "Median time in a stage of the stays that ended in the window",
    ["window", "stage"],
)
REFRESHED = Gauge(
    "clm_kpi_refreshed_timestamp_seconds", "When the KPI gauges were last found up to date"
)
PRUNED = Gauge("clm_kpi_pruned_rows", "Rows the last retention run removed")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(Decimal(str(value)))


def _set(gauge: Gauge, labels: Sequence[str], value: Any) -> None:
    """Set a sample, or drop it when the KPI is unknown (an unlabelled gauge shows NaN)."""
    number = _number(value)
    if not labels:
        gauge.set(math.nan if number is None else number)
    elif number is None:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    else:
        gauge.labels(*labels).set(number)


def bounded(values: Mapping[str, int], allowed: Sequence[str] | None, top: int) -> dict[str, int]:
    """Fold label values outside ``allowed`` (or beyond the ``top`` largest) into ``other``."""
    keep = (
        set(allowed)
        if allowed is not None
        else {k for k, _ in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:top]}
    )
    out: dict[str, int] = {}
    for k, v in values.items():
        label = k if k in keep and k != OTHER else OTHER
        out[label] = out.get(label, 0) + v
    return out


async def refresh_gauges(
    engine: AsyncEngine,
    reporting_currency: str,
    *,
    channels: Sequence[str],
    max_sources: int,
    retention: Retention,
    cache: ClosedDayCache | None = None,
    now: datetime | None = None,
    forecasts: Forecasts | None = None,
) -> None:
    now = now or datetime.now(UTC)
    computed = []  # every window read before any gauge is set: a scrape sees one refresh
    for window, span in WINDOWS.items():
        start, end = window_bounds(now, span)
        start = retention.align(start, now)
        inputs = await service.window_inputs(
            engine, start, end, now, cache=cache, forecasts=forecasts
        )
        computed.append((window, inputs))
    for window, inputs in computed:
        kpis = compute_kpis(inputs, reporting_currency=reporting_currency)
        _set_window(window, kpis, lifecycle_map(inputs), channels, max_sources)
    for stage, n in kpis["customers_by_stage"].items():
        CUSTOMERS.labels(stage).set(n)
    _set(OPEN_TICKETS, [], kpis["open_support_tickets"])
    _set(CLV, [], kpis["clv_historical"])
    _set(EXPECTED_PURCHASES, [], kpis["expected_purchases_90d"])
    for ch in channels:
        _set(CLV_BY_CHANNEL, [ch], (kpis["clv_by_channel"].get(ch) or {}).get("clv_historical"))
    REFRESHED.set(now.timestamp())


def _set_window(
    window: str,
    kpis: Mapping[str, Any],
    lmap: Mapping[str, Any],
    channels: Sequence[str],
    max_sources: int,
) -> None:
    """The gauges of one window from its KPIs and lifecycle map."""
    for name, gauge in _WINDOWED_GAUGES.items():
        _set(gauge, [window], kpis[name])
    for ch, n in bounded(kpis["visits_by_channel"], channels, 0).items():
        VISITS_BY_CHANNEL.labels(window, ch).set(n)
    for src, n in bounded(kpis["visits_by_source"], None, max_sources).items():
        VISITS_BY_SOURCE.labels(window, src).set(n)
    for ch in channels:
        _set(CAC_BY_CHANNEL, [window, ch], (kpis["cac_by_channel"].get(ch) or {}).get("cac"))
    for before in [*(s.value for s in Stage), "none"]:
        for after in (s.value for s in Stage):
            TRANSITIONS.labels(window, before, after).set(0)
    for move in lmap["transitions"]:
        TRANSITIONS.labels(window, move["from"] or "none", move["to"]).set(move["customers"])
    for stage, seconds in lmap["median_seconds_in_stage"].items():
        _set(STAY, [window, stage], seconds)


async def refresh_forever(
    engine: AsyncEngine,
    reporting_currency: str,
    every_s: float,
    *,
    channels: Sequence[str],
    max_sources: int,
    retention: Retention,
    cache: ClosedDayCache | None = None,
    forecasts: Forecasts | None = None,
) -> None:
    """Every ``every_s``: recompute the gauges when something changed since the last time.

    The gauges are a function of the counted writes, the current minute (windows are whole
    minutes) and the model version, so when no write was counted (:func:`reads.change_count`),
    the minute is the same and no model was fitted, they are still right and only their
    timestamp moves: an idle service reads two numbers instead of every window. (The
    predictive gauges also follow the stage engine's facts, which change with the writes.)"""
    current: tuple[int, datetime, int | None] | None = None
    while True:
        try:
            now = datetime.now(UTC)
            async with engine.connect() as conn:
                seen = (
                    await reads.change_count(conn),
                    floor_minute(now),
                    await predictions.current_version(conn),
                )
            if seen != current:
                # read before refreshing: a write counted meanwhile changes the next ``seen``
                await refresh_gauges(
                    engine,
                    reporting_currency,
                    channels=channels,
                    max_sources=max_sources,
                    retention=retention,
                    cache=cache,
                    now=now,
                    forecasts=forecasts,
                )
                current = seen
            else:
                REFRESHED.set(now.timestamp())
        except Exception:
            log.warning("KPI gauge refresh failed", exc_info=True)
        await asyncio.sleep(every_s)
