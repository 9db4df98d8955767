"""The lifecycle KPIs from a window's bucket totals (pure; formulas as in the README table).

Inputs are plain sums: ``Totals`` maps ``(metric, source, channel, currency)`` to the sum of that
metric's buckets over the window (already filtered by source/channel), ``Stages`` maps a stage to
its number of customers at an instant. A ratio whose denominator is 0 is ``None``, never 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pyroaring import BitMap

from clm_domain.kpis import money, ratio
from clm_domain.lifecycle import ARC, Stage
from clm_metrics.buckets import ACTIVE_STAGES, STAY_BINS, stay_bin_middle
from clm_metrics.predicted import Predicted
from clm_metrics.sums import ZERO, MetricSums, Totals, prefixed

Stages = Mapping[str, int]
RATE = Decimal("0.0001")
CENTS = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class WindowInputs:
    """Everything one window's KPIs are computed from."""

    totals: Totals
    stages_at_start: Stages
    stages_at_end: Stages
    all_time: Totals
    distinct: Mapping[str, int | None] = field(default_factory=dict)
    #: Support tickets open at the window's end (per ticket: ``clm_metrics.tickets``).
    open_tickets_at_end: int = 0
    #: ``totals`` indexed by metric, when the reader has it at hand (else built from them).
    sums: MetricSums | None = field(default=None, compare=False, repr=False)
    #: The window's purchasing customers (metrics customer numbers), when counted.
    purchasers: BitMap | None = field(default=None, compare=False, repr=False)
    #: The predictive KPIs (:mod:`clm_metrics.predicted`), when read.
    predicted: Predicted = field(default_factory=Predicted)


def rate(numerator: Decimal | int, denominator: Decimal | int) -> str | None:
    """A ratio as a decimal string with 4 places (``None`` when the denominator is 0)."""
    value = ratio(Decimal(numerator), Decimal(denominator))
    return None if value is None else str(value.quantize(RATE))


def flows(totals: Totals | MetricSums) -> dict[tuple[str, str], int]:
    """Customers moved ``from → to`` (``from`` is ``""`` for a new customer)."""
    moved = (
        totals.prefixed("flow:") if isinstance(totals, MetricSums) else prefixed(totals, "flow:")
    )
    out: dict[tuple[str, str], int] = {}
    for name, v in moved.items():
        before, _, after = name.partition(":")
        out[(before, after)] = out.get((before, after), 0) + int(v)
    return out


def stage_net(totals: Totals) -> dict[str, int]:
    """Net customers each stage gained from the flows of ``totals``."""
    out = {stage.value: 0 for stage in Stage}
    for (before, after), n in flows(totals).items():
        if before:
            out[before] = out.get(before, 0) - n
        if after:  # "": the profile left (merged away or erased)
            out[after] = out.get(after, 0) + n
    return out


def active(stages: Stages) -> int:
    return sum(stages.get(s, 0) for s in ACTIVE_STAGES)


def median_stay(totals: Totals, stage: str) -> timedelta | None:
    """Median time in ``stage`` of the stays that ended in the window (histogram bin middle)."""
    bins = {int(b): int(v) for b, v in prefixed(totals, f"stay:{stage}:").items() if v}
    n = sum(bins.values())
    if n == 0:
        return None
    seen = 0
    for b in range(STAY_BINS):
        seen += bins.get(b, 0)
        if 2 * seen >= n:
            return stay_bin_middle(b)
    return None  # pragma: no cover - the bins cover every stay


def compute_kpis(inputs: WindowInputs, *, reporting_currency: str) -> dict[str, Any]:
    """Every KPI of the window (see the README's KPI table for the formulas)."""
    sums = inputs.sums if inputs.sums is not None else MetricSums(inputs.totals)
    rc = reporting_currency
    churned = sum(n for (_, after), n in flows(sums).items() if after == Stage.CHURNED.value)
    return {
        **_reach(sums, inputs),
        **_acquisition(sums, rc),
        **_conversion(sums, inputs, rc),
        **_retention(sums, inputs, churned),
        **_loyalty(sums),
        **_value(sums, inputs, rc),
        "customers_by_stage": _by_stage(inputs.stages_at_end),
    }


def _by_stage(stages: Stages) -> dict[str, int]:
    return {s.value: int(stages.get(s.value, 0)) for s in Stage}


def _counts_by(sums: MetricSums, metric: str, by: str) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(sums.grouped(metric, by).items()) if v}


def _reach(sums: MetricSums, inputs: WindowInputs) -> dict[str, Any]:
    return {
        "events": int(sums("events")),
        "site_visits": int(sums("events:site_visit")),
        "ad_clicks": int(sums("events:ad_click")),
        "unique_visitors": inputs.distinct.get("visitors"),
        "visits_by_channel": _counts_by(sums, "events:site_visit", "channel"),
        "visits_by_source": _counts_by(sums, "events:site_visit", "source"),
    }


def _acquisition(sums: MetricSums, rc: str) -> dict[str, Any]:
    leads, converted_leads = int(sums("leads")), int(sums("converted_leads"))
    spend = sums("spend", rc)
    return {
        "leads": leads,
        "converted_leads": converted_leads,
        "lead_conversion_rate": rate(converted_leads, leads),
        "marketing_spend": money(spend),
        "cac": money(ratio(spend, Decimal(int(sums("new_customers"))))),
        "cac_by_channel": _cac_by_channel(sums, rc),
        "campaigns": _campaigns(sums, rc),
    }


def _channel_spend(sums: MetricSums, rc: str) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """Spend and new customers by channel (groups restatements took back entirely left out)."""
    return (
        nonzero(sums.grouped("spend", "channel", rc)),
        nonzero(sums.grouped("new_customers", "channel")),
    )


def _cac_by_channel(sums: MetricSums, rc: str) -> dict[str, Any]:
    spend, customers = _channel_spend(sums, rc)
    return {
        ch: {
            "spend": money(spend.get(ch, ZERO)),
            "new_customers": int(customers.get(ch, ZERO)),
            "cac": money(ratio(spend.get(ch, ZERO), customers.get(ch, ZERO))),
        }
        for ch in sorted(set(spend) | set(customers))
    }


def _campaigns(sums: MetricSums, rc: str) -> dict[str, Any]:
    c_spend = nonzero(sums.prefixed("campaign_spend:", rc))
    c_leads = nonzero(sums.prefixed("campaign_leads:"))
    c_customers = nonzero(sums.prefixed("campaign_customers:"))
    return {
        c: {
            "spend": money(c_spend.get(c, ZERO)),
            "leads": int(c_leads.get(c, ZERO)),
            "customers": int(c_customers.get(c, ZERO)),
            "cac": money(ratio(c_spend.get(c, ZERO), c_customers.get(c, ZERO))),
        }
        for c in sorted(set(c_spend) | set(c_leads) | set(c_customers))
    }


def _frequency(sums: MetricSums, inputs: WindowInputs) -> Decimal | None:
    """Orders per purchasing customer."""
    purchasers = inputs.distinct.get("purchasers")
    return None if not purchasers else Decimal(int(sums("orders"))) / Decimal(purchasers)


def _conversion(sums: MetricSums, inputs: WindowInputs, rc: str) -> dict[str, Any]:
    orders, refunds = int(sums("orders")), int(sums("refunds"))
    new_customers, leads = int(sums("new_customers")), int(sums("leads"))
    visitors = inputs.distinct.get("visitors")
    frequency = _frequency(sums, inputs)
    revenue_currencies = sorted({k[3] for k in inputs.totals if k[0] == "revenue"})
    return {
        "new_customers": new_customers,
        "conversion_rate_visitors": None if visitors is None else rate(new_customers, visitors),
        "conversion_rate_leads": rate(new_customers, leads),
        "purchases": orders,
        "currency": rc,
        "revenue": money(sums("revenue", rc)),
        "revenue_by_currency": {
            c: money(sums("revenue", c)) for c in revenue_currencies if sums("revenue", c)
        },
        "average_order_value": money(ratio(sums("revenue", rc), sums("orders", rc))),
        "purchasing_customers": inputs.distinct.get("purchasers"),
        "purchase_frequency": None if frequency is None else str(frequency.quantize(RATE)),
        "refunds": refunds,
        "refunded": money(sums("refund_amount", rc)),
        "refund_rate": rate(refunds, orders),
    }


def _churn(churned: int, inputs: WindowInputs) -> Decimal | None:
    """Churned in the window / active customers at its start."""
    return ratio(Decimal(churned), Decimal(active(inputs.stages_at_start)))


def _retention(sums: MetricSums, inputs: WindowInputs, churned: int) -> dict[str, Any]:
    purchasers = inputs.distinct.get("purchasers")
    repeaters = inputs.distinct.get("repeat_purchasers")
    start_active, end_active = active(inputs.stages_at_start), active(inputs.stages_at_end)
    churn = _churn(churned, inputs)
    return {
        "repeat_purchases": int(sums("repeat_purchases")),
        "repeat_purchase_rate": None
        if not purchasers or repeaters is None
        else rate(repeaters, purchasers),
        "churned": churned,
        "active_customers_at_start": start_active,
        "active_customers_at_end": end_active,
        "churn_rate": None if churn is None else str(churn.quantize(RATE)),
        "retention_rate": rate(end_active - int(sums("new_customers")), start_active),
        "reactivations": int(sums("reactivations")),
        "csat": rate(sums("csat_satisfied"), sums("csat_answers")),
        "csat_answers": int(sums("csat_answers")),
        "support_tickets_opened": int(sums("tickets_opened")),
        "support_tickets_solved": int(sums("tickets_solved")),
        "open_support_tickets": inputs.open_tickets_at_end,
    }


def _loyalty(sums: MetricSums) -> dict[str, Any]:
    nps_n, reviews = int(sums("nps_responses")), int(sums("reviews"))
    net = sums("nps_promoters") - sums("nps_detractors")
    return {
        "nps": None if nps_n == 0 else str((Decimal(100) * net / Decimal(nps_n)).quantize(CENTS)),
        "nps_responses": nps_n,
        "reviews": reviews,
        "average_rating": None
        if reviews == 0
        else str((sums("rating_sum") / Decimal(reviews)).quantize(CENTS)),
        "referrals": int(sums("events:referral")),
    }


def _value(sums: MetricSums, inputs: WindowInputs, rc: str) -> dict[str, Any]:
    life = MetricSums(inputs.all_time)
    expected = inputs.predicted.expected_purchases_90d
    return {
        "clv_historical": money(ratio(life("customer_revenue", rc), life("new_customers"))),
        "clv_predicted": money(inputs.predicted.clv),
        "expected_purchases_90d": None if expected is None else round(expected, 6),
        "clv_by_channel": _clv_by_channel(sums, life, rc),
    }


def _clv_by_channel(sums: MetricSums, life: MetricSums, rc: str) -> dict[str, Any]:
    spend, customers = _channel_spend(sums, rc)
    life_revenue = nonzero(life.grouped("customer_revenue", "channel", rc))
    life_customers = nonzero(life.grouped("new_customers", "channel"))
    out = {}
    for ch in sorted(set(life_revenue) | set(life_customers) | set(spend) | set(customers)):
        historical = ratio(life_revenue.get(ch, ZERO), life_customers.get(ch, ZERO))
        cac = ratio(spend.get(ch, ZERO), customers.get(ch, ZERO))
        out[ch] = {
            "clv_historical": money(historical),
            "cac": money(cac),
            "clv_to_cac": None if historical is None or not cac else rate(historical, cac),
        }
    return out


def lifecycle_map(inputs: WindowInputs) -> dict[str, Any]:
    """Customers per stage, flows between stages, median time in stage, stage conversion."""
    move = flows(inputs.totals)
    entered: dict[str, int] = {}
    for (_, after), n in move.items():
        if after:
            entered[after] = entered.get(after, 0) + n
    rank = {s.value: i for i, s in enumerate(ARC)}
    conversion = {}
    for stage in ARC[:-1]:
        onward = sum(
            n
            for (before, after), n in move.items()
            if before == stage.value and rank.get(after, -1) > rank[stage.value]
        )
        conversion[stage.value] = {
            "entered": entered.get(stage.value, 0),
            "moved_on": onward,
            "rate": rate(onward, entered.get(stage.value, 0)),
        }
    medians = {}
    for stage in Stage:
        m = median_stay(inputs.totals, stage.value)
        medians[stage.value] = None if m is None else round(m.total_seconds())
    return {
        "customers_by_stage": {s.value: int(inputs.stages_at_end.get(s.value, 0)) for s in Stage},
        "customers_by_stage_at_start": {
            s.value: int(inputs.stages_at_start.get(s.value, 0)) for s in Stage
        },
        "transitions": [
            {"from": before or None, "to": after, "customers": n}
            for (before, after), n in sorted(move.items())
            if n and after
        ],
        "median_seconds_in_stage": medians,
        "stage_conversion": conversion,
    }


def nonzero(values: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Groups whose sum is not zero: what restatements took back entirely is not listed."""
    return {k: v for k, v in values.items() if v}
