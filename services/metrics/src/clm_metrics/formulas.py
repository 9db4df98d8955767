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

from clm_domain.kpis import money, ratio
from clm_domain.lifecycle import ARC, Stage
from clm_metrics.buckets import ACTIVE_STAGES, STAY_BINS, stay_bin_middle

TotalsKey = tuple[str, str, str, str]
Totals = Mapping[TotalsKey, Decimal]
Stages = Mapping[str, int]
ZERO = Decimal(0)
RATE = Decimal("0.0001")


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


class MetricSums:
    """A metric's total (in one currency, or all): the totals summed per metric and currency,
    and each metric's keys, in one pass, so each KPI is a lookup or a scan of its own metrics'
    keys rather than of every key."""

    def __init__(self, totals: Totals) -> None:
        self._sums: dict[str, dict[str, Decimal]] = {}
        self._keys: dict[str, list[tuple[TotalsKey, Decimal]]] = {}
        self._add(totals, shared=False)

    def plus(self, totals: Totals) -> MetricSums:
        """These sums with ``totals`` added, as a new index that shares every metric
        ``totals`` does not touch (neither index changes afterwards): its cost is the number
        of metrics and of ``totals``' keys, not of the keys indexed here."""
        out = MetricSums({})
        out._sums, out._keys = dict(self._sums), dict(self._keys)
        out._add(totals, shared=True)
        return out

    def _add(self, totals: Totals, *, shared: bool) -> None:
        copied: set[str] = set()
        for key, v in totals.items():
            m, c = key[0], key[3]
            if shared and m not in copied:  # copy before the first change: it is shared
                copied.add(m)
                self._sums[m] = dict(self._sums.get(m, {}))
                self._keys[m] = list(self._keys.get(m, ()))
            per = self._sums.get(m)
            if per is None:
                per = self._sums[m] = {}
                self._keys[m] = []
            per[c] = per.get(c, ZERO) + v
            self._keys[m].append((key, v))

    def entries(self, prefix: str) -> list[tuple[TotalsKey, Decimal]]:
        """Every key (and value) of the metrics named ``<prefix>…``."""
        return [e for m, keys in self._keys.items() if m.startswith(prefix) for e in keys]

    def __call__(self, metric: str, currency: str | None = None) -> Decimal:
        per = self._sums.get(metric, {})
        if currency is None:
            return sum(per.values(), ZERO)
        return per.get(currency, ZERO)

    def grouped(self, metric: str, by: str, currency: str | None = None) -> dict[str, Decimal]:
        """Sums of ``metric`` by ``source`` or ``channel``."""
        index = 1 if by == "source" else 2
        out: dict[str, Decimal] = {}
        for key, v in self._keys.get(metric, ()):
            if currency is None or key[3] == currency:
                out[key[index]] = out.get(key[index], ZERO) + v
        return out

    def prefixed(self, prefix: str, currency: str | None = None) -> dict[str, Decimal]:
        """Sums of every ``<prefix><name>`` metric, by ``name``."""
        out: dict[str, Decimal] = {}
        for metric, per in self._sums.items():
            if metric.startswith(prefix):
                name = metric[len(prefix) :]
                value = sum(per.values(), ZERO) if currency is None else per.get(currency)
                if value is not None:
                    out[name] = out.get(name, ZERO) + value
        return out


def grouped(
    totals: Totals, metric: str, by: str, currency: str | None = None
) -> dict[str, Decimal]:
    """Sums of ``metric`` by ``source`` or ``channel``."""
    return MetricSums(totals).grouped(metric, by, currency)


def prefixed(totals: Totals, prefix: str, currency: str | None = None) -> dict[str, Decimal]:
    """Sums of every ``<prefix><name>`` metric, by ``name`` (one scan of the keys)."""
    out: dict[str, Decimal] = {}
    for (m, _, _, c), v in totals.items():
        if m.startswith(prefix) and (currency is None or c == currency):
            name = m[len(prefix) :]
            out[name] = out.get(name, ZERO) + v
    return out


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


def _money_or_none(value: Decimal | None) -> str | None:
    return money(value)


def compute_kpis(inputs: WindowInputs, *, reporting_currency: str) -> dict[str, Any]:
    """Every KPI of the window (see the README's KPI table for the formulas)."""
    t, rc = inputs.totals, reporting_currency
    sums = inputs.sums if inputs.sums is not None else MetricSums(t)
    life = MetricSums(inputs.all_time)
    orders = int(sums("orders"))
    rc_orders = sums("orders", rc)
    revenue = sums("revenue", rc)
    visits = int(sums("events:site_visit"))
    leads = int(sums("leads"))
    converted_leads = int(sums("converted_leads"))
    new_customers = int(sums("new_customers"))
    spend = sums("spend", rc)
    refunds = int(sums("refunds"))
    move = flows(sums)
    churned = sum(n for (_, after), n in move.items() if after == Stage.CHURNED.value)
    start_active, end_active = active(inputs.stages_at_start), active(inputs.stages_at_end)
    churn = ratio(Decimal(churned), Decimal(start_active))
    aov = ratio(revenue, rc_orders)
    visitors = inputs.distinct.get("visitors")
    purchasers = inputs.distinct.get("purchasers")
    repeaters = inputs.distinct.get("repeat_purchasers")
    frequency = None if not purchasers else Decimal(orders) / Decimal(purchasers)
    predicted = None
    if aov is not None and frequency is not None and churn:
        predicted = aov * frequency / churn
    nps_n = int(sums("nps_responses"))
    reviews = int(sums("reviews"))

    spend_by_channel = nonzero(sums.grouped("spend", "channel", rc))
    customers_by_channel = nonzero(sums.grouped("new_customers", "channel"))
    cac_by_channel = {
        ch: {
            "spend": money(spend_by_channel.get(ch, ZERO)),
            "new_customers": int(customers_by_channel.get(ch, ZERO)),
            "cac": money(ratio(spend_by_channel.get(ch, ZERO), customers_by_channel.get(ch, ZERO))),
        }
        for ch in sorted(set(spend_by_channel) | set(customers_by_channel))
    }
    c_spend = nonzero(sums.prefixed("campaign_spend:", rc))
    c_leads = nonzero(sums.prefixed("campaign_leads:"))
    c_customers = nonzero(sums.prefixed("campaign_customers:"))
    campaigns = {
        c: {
            "spend": money(c_spend.get(c, ZERO)),
            "leads": int(c_leads.get(c, ZERO)),
            "customers": int(c_customers.get(c, ZERO)),
            "cac": money(ratio(c_spend.get(c, ZERO), c_customers.get(c, ZERO))),
        }
        for c in sorted(set(c_spend) | set(c_leads) | set(c_customers))
    }
    life_revenue = nonzero(life.grouped("customer_revenue", "channel", rc))
    life_customers = nonzero(life.grouped("new_customers", "channel"))
    clv_by_channel = {}
    for ch in sorted(set(life_revenue) | set(life_customers) | set(cac_by_channel)):
        historical = ratio(life_revenue.get(ch, ZERO), life_customers.get(ch, ZERO))
        cac = ratio(spend_by_channel.get(ch, ZERO), customers_by_channel.get(ch, ZERO))
        clv_by_channel[ch] = {
            "clv_historical": money(historical),
            "cac": money(cac),
            "clv_to_cac": None if historical is None or not cac else rate(historical, cac),
        }
    return {
        # reach
        "events": int(sums("events")),
        "site_visits": visits,
        "ad_clicks": int(sums("events:ad_click")),
        "unique_visitors": visitors,
        "visits_by_channel": {
            k: int(v) for k, v in sorted(sums.grouped("events:site_visit", "channel").items()) if v
        },
        "visits_by_source": {
            k: int(v) for k, v in sorted(sums.grouped("events:site_visit", "source").items()) if v
        },
        # acquisition
        "leads": leads,
        "converted_leads": converted_leads,
        "lead_conversion_rate": rate(converted_leads, leads),
        "marketing_spend": money(spend),
        "cac": money(ratio(spend, Decimal(new_customers))),
        "cac_by_channel": cac_by_channel,
        "campaigns": campaigns,
        # conversion
        "new_customers": new_customers,
        "conversion_rate_visitors": None if visitors is None else rate(new_customers, visitors),
        "conversion_rate_leads": rate(new_customers, leads),
        "purchases": orders,
        "currency": rc,
        "revenue": money(revenue),
        "revenue_by_currency": {
            c: money(sums("revenue", c))
            for c in sorted({k[3] for k in t if k[0] == "revenue"})
            if sums("revenue", c)
        },
        "average_order_value": money(aov),
        "purchasing_customers": purchasers,
        "purchase_frequency": None if frequency is None else str(frequency.quantize(RATE)),
        "refunds": refunds,
        "refunded": money(sums("refund_amount", rc)),
        "refund_rate": rate(refunds, orders),
        # retention
        "repeat_purchases": int(sums("repeat_purchases")),
        "repeat_purchase_rate": None
        if not purchasers or repeaters is None
        else rate(repeaters, purchasers),
        "churned": churned,
        "active_customers_at_start": start_active,
        "active_customers_at_end": end_active,
        "churn_rate": None if churn is None else str(churn.quantize(RATE)),
        "retention_rate": rate(end_active - new_customers, start_active),
        "reactivations": int(sums("reactivations")),
        "csat": rate(sums("csat_satisfied"), sums("csat_answers")),
        "csat_answers": int(sums("csat_answers")),
        "support_tickets_opened": int(sums("tickets_opened")),
        "support_tickets_solved": int(sums("tickets_solved")),
        "open_support_tickets": inputs.open_tickets_at_end,
        # loyalty
        "nps": None
        if nps_n == 0
        else str(
            (
                Decimal(100) * (sums("nps_promoters") - sums("nps_detractors")) / Decimal(nps_n)
            ).quantize(Decimal("0.01"))
        ),
        "nps_responses": nps_n,
        "reviews": reviews,
        "average_rating": None
        if reviews == 0
        else str((sums("rating_sum") / Decimal(reviews)).quantize(Decimal("0.01"))),
        "referrals": int(sums("events:referral")),
        # value
        "clv_historical": _money_or_none(
            ratio(life("customer_revenue", rc), life("new_customers"))
        ),
        "clv_predicted": money(predicted),
        "clv_by_channel": clv_by_channel,
        # lifecycle
        "customers_by_stage": {s.value: int(inputs.stages_at_end.get(s.value, 0)) for s in Stage},
    }


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
