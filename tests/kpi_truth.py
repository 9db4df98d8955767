"""Brute-force KPI truth: replay raw events customer by customer, then count straight from the
replayed steps for one window. No buckets, no rollups, no SQL: the reference the metrics
service is compared with (unit tests with hypothesis, the integration test through the stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from clm_common.events import Event, MarketingSpend, parse_event
from clm_common.lifecycle import (
    Applied,
    CustomerState,
    Stage,
    apply_event,
    customer_key,
    event_order,
)
from clm_common.rules import LifecycleRules
from clm_metrics.buckets import ACTIVE_STAGES, stay_bin, stay_bin_middle
from clm_stage_engine.records import lifecycle_record

RULES = LifecycleRules()
ZERO = Decimal(0)
CENT = Decimal("0.01")
RATE = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class Step:
    """One applied event: the customer before and what applying gave (None for spend)."""

    event: Event
    before: CustomerState | None
    applied: Applied | None

    @property
    def at(self) -> datetime:
        return self.event.occurred_at

    def record(self) -> dict[str, Any]:
        """The ``clm.lifecycle.v1`` record the stage engine publishes for this step."""
        doc: dict[str, Any] = orjson.loads(lifecycle_record(self.event, self.before, self.applied))
        return doc


def replay(docs: list[dict[str, Any]], *, now: datetime) -> list[Step]:
    """Apply every event in order (per customer, by event time) with the stage reducer and the
    default rules (an explicit cancellation churns, as the stage engine does)."""
    events = [parse_event(d, now=now) for d in docs]
    events.sort(key=event_order)
    state: dict[str, CustomerState] = {}
    steps = []
    for event in events:
        key = customer_key(event)
        if key is None:
            steps.append(Step(event, None, None))
            continue
        before = state.get(key)
        applied = apply_event(before, event, RULES)
        state[key] = applied.state
        steps.append(Step(event, before, applied))
    return steps


def props(step: Step) -> Any:
    """The event's properties (typed per event type; read here by name)."""
    return step.event.properties


def _in(at: datetime, start: datetime, end: datetime) -> bool:
    return start <= at.astimezone(UTC).replace(second=0, microsecond=0) < end


def _rate(n: Decimal | int, d: Decimal | int) -> str | None:
    return None if d == 0 else str((Decimal(n) / Decimal(d)).quantize(RATE))


def _money(v: Decimal | None) -> str | None:
    return None if v is None else str(v.quantize(CENT))


def stages_at(
    steps: list[Step], at: datetime, source: str | None, channel: str | None
) -> dict[str, int]:
    """Customers per stage at an instant (by each customer's last move before it)."""
    last: dict[str, tuple[str, str, str]] = {}
    for s in steps:
        if s.applied is None or s.applied.transition is None:
            continue
        t = s.applied.transition
        if t.at.replace(second=0, microsecond=0) < at:
            st = s.applied.state
            last[st.customer_id] = (t.to_stage.value, st.first_source, st.first_channel or "")
    out = {s.value: 0 for s in Stage}
    for stage, src, ch in last.values():
        if (source is None or src == source) and (channel is None or ch == channel):
            out[stage] += 1
    return out


def truth(
    steps: list[Step],
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    reporting_currency: str = "USD",
    source: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    """Every KPI of ``[start, end)`` recomputed from the steps (exact distinct counts)."""
    rc = reporting_currency

    def ev_ok(e: Event) -> bool:
        return (source is None or e.source == source) and (
            channel is None or (e.channel or "") == channel
        )

    def cu_ok(s: Step) -> bool:
        assert s.applied is not None
        st = s.applied.state
        return (source is None or st.first_source == source) and (
            channel is None or (st.first_channel or "") == channel
        )

    window = [s for s in steps if _in(s.at, start, end) and ev_ok(s.event)]
    customer_steps = [s for s in steps if s.applied is not None and cu_ok(s)]
    by_type: dict[str, list[Step]] = {}
    for s in window:
        by_type.setdefault(s.event.type, []).append(s)
    purchases = by_type.get("purchase", [])
    rc_purchases = [s for s in purchases if props(s).currency == rc]
    revenue = sum((props(s).amount for s in rc_purchases), ZERO)
    visits = by_type.get("site_visit", [])
    visitors = {customer_key(s.event) for s in visits}
    purchasers = {customer_key(s.event) for s in purchases}
    repeaters = {
        customer_key(s.event) for s in purchases if s.applied and s.applied.repeat_purchase
    }

    def moved(s: Step) -> datetime:
        assert s.applied is not None
        assert s.applied.transition is not None
        return s.applied.transition.at

    transitions = [
        s
        for s in customer_steps
        if s.applied is not None and s.applied.transition is not None and _in(moved(s), start, end)
    ]
    leads = [
        s
        for s in transitions
        if s.applied
        and s.applied.transition
        and s.applied.transition.to_stage == Stage.ACQUISITION
        and s.applied.transition.from_stage in (None, Stage.REACH)
    ]
    new_customers = [
        s
        for s in customer_steps
        if s.applied and s.applied.first_purchase and _in(s.at, start, end)
    ]
    converted_leads = [
        s
        for s in customer_steps
        if s.applied
        and s.applied.first_purchase
        and s.applied.state.acquired_at is not None
        and _in(s.applied.state.acquired_at, start, end)
    ]
    spends = [
        s
        for s in steps
        if isinstance(s.event, MarketingSpend)
        and _in(props(s).period_start, start, end)
        and (source is None or s.event.source == source)
        and (channel is None or props(s).channel == channel)
    ]
    rc_spend = [s for s in spends if props(s).currency == rc]
    spend = sum((props(s).amount for s in rc_spend), ZERO)
    churned = [
        s
        for s in transitions
        if s.applied and s.applied.transition and s.applied.transition.to_stage == Stage.CHURNED
    ]
    at_start = stages_at(steps, start, source, channel)
    at_end = stages_at(steps, end, source, channel)
    active_start = sum(at_start[s] for s in ACTIVE_STAGES)
    active_end = sum(at_end[s] for s in ACTIVE_STAGES)
    churn = None if active_start == 0 else Decimal(len(churned)) / active_start
    aov = None if not rc_purchases else revenue / len(rc_purchases)
    frequency = None if not purchasers else Decimal(len(purchases)) / len(purchasers)
    predicted = None
    if aov is not None and frequency is not None and churn:
        predicted = aov * frequency / churn
    tickets = by_type.get("support_ticket", [])
    csat = [props(s).csat for s in tickets if props(s).csat is not None]
    nps = [props(s).score for s in by_type.get("nps_response", [])]
    ratings = [props(s).rating for s in by_type.get("review", [])]
    all_tickets = [s for s in steps if s.event.type == "support_ticket" and ev_ok(s.event)]
    life_customers = [s for s in customer_steps if s.applied and s.applied.first_purchase]
    life_revenue = sum(
        (
            props(s).amount
            for s in customer_steps
            if s.event.type == "purchase" and props(s).currency == rc
        ),
        ZERO,
    )

    def by_channel_of(items: list[Step], of: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in items:
            k = of(s)
            out[k] = out.get(k, 0) + 1
        return out

    spend_by_ch: dict[str, Decimal] = {}
    for s in rc_spend:
        ch = props(s).channel
        spend_by_ch[ch] = spend_by_ch.get(ch, ZERO) + props(s).amount
    cust_by_ch = by_channel_of(new_customers, lambda s: s.applied.state.first_channel or "")
    cac_by_channel = {
        ch: {
            "spend": _money(spend_by_ch.get(ch, ZERO)),
            "new_customers": cust_by_ch.get(ch, 0),
            "cac": _money(spend_by_ch.get(ch, ZERO) / cust_by_ch[ch])
            if cust_by_ch.get(ch)
            else None,
        }
        for ch in sorted(set(spend_by_ch) | set(cust_by_ch))
    }
    campaigns: dict[str, dict[str, Any]] = {}
    for s in rc_spend:
        c = props(s).campaign
        entry = campaigns.setdefault(c, {"spend": ZERO})
        entry["spend"] += props(s).amount

    def first_campaign(s: Step) -> str | None:
        return s.applied.state.first_campaign if s.applied else None

    for s in leads:
        if (c := first_campaign(s)) is not None:
            entry = campaigns.setdefault(c, {"spend": ZERO})
            entry["leads"] = entry.get("leads", 0) + 1
    for s in new_customers:
        if (c := first_campaign(s)) is not None:
            entry = campaigns.setdefault(c, {"spend": ZERO})
            entry["customers"] = entry.get("customers", 0) + 1
    campaign_out = {
        c: {
            "spend": _money(v["spend"]),
            "leads": v.get("leads", 0),
            "customers": v.get("customers", 0),
            "cac": _money(v["spend"] / v["customers"]) if v.get("customers") else None,
        }
        for c, v in sorted(campaigns.items())
    }
    life_rev_ch: dict[str, Decimal] = {}
    for s in customer_steps:
        if s.event.type == "purchase" and props(s).currency == rc:
            assert s.applied is not None
            ch = s.applied.state.first_channel or ""
            life_rev_ch[ch] = life_rev_ch.get(ch, ZERO) + props(s).amount
    life_cust_ch = by_channel_of(life_customers, lambda s: s.applied.state.first_channel or "")
    clv_by_channel = {}
    for ch in sorted(set(life_rev_ch) | set(life_cust_ch) | set(cac_by_channel)):
        hist = life_rev_ch.get(ch, ZERO) / life_cust_ch[ch] if life_cust_ch.get(ch) else None
        cac = spend_by_ch.get(ch, ZERO) / cust_by_ch[ch] if cust_by_ch.get(ch) else None
        clv_by_channel[ch] = {
            "clv_historical": _money(hist),
            "cac": _money(cac),
            "clv_to_cac": None if hist is None or not cac else _rate(hist, cac),
        }
    currencies: dict[str, Decimal] = {}
    for s in purchases:
        p = props(s)
        currencies[p.currency] = currencies.get(p.currency, ZERO) + p.amount
    return {
        "events": len(window),
        "site_visits": len(visits),
        "ad_clicks": len(by_type.get("ad_click", [])),
        "unique_visitors": len(visitors),
        "visits_by_channel": dict(
            sorted(by_channel_of(visits, lambda s: s.event.channel or "").items())
        ),
        "visits_by_source": dict(sorted(by_channel_of(visits, lambda s: s.event.source).items())),
        "leads": len(leads),
        "converted_leads": len(converted_leads),
        "lead_conversion_rate": _rate(len(converted_leads), len(leads)),
        "marketing_spend": _money(spend),
        "cac": _money(spend / len(new_customers)) if new_customers else None,
        "cac_by_channel": cac_by_channel,
        "campaigns": campaign_out,
        "new_customers": len(new_customers),
        "conversion_rate_visitors": _rate(len(new_customers), len(visitors)),
        "conversion_rate_leads": _rate(len(new_customers), len(leads)),
        "purchases": len(purchases),
        "currency": rc,
        "revenue": _money(revenue),
        "revenue_by_currency": {c: _money(v) for c, v in sorted(currencies.items())},
        "average_order_value": _money(aov),
        "purchasing_customers": len(purchasers),
        "purchase_frequency": None if frequency is None else str(frequency.quantize(RATE)),
        "refunds": len(by_type.get("refund", [])),
        "refunded": _money(
            sum(
                (props(s).amount for s in by_type.get("refund", []) if props(s).currency == rc),
                ZERO,
            )
        ),
        "refund_rate": _rate(len(by_type.get("refund", [])), len(purchases)),
        "repeat_purchases": sum(
            1
            for s in customer_steps
            if s.applied and s.applied.repeat_purchase and _in(s.at, start, end)
        ),
        "repeat_purchase_rate": _rate(len(repeaters), len(purchasers)),
        "churned": len(churned),
        "active_customers_at_start": active_start,
        "active_customers_at_end": active_end,
        "churn_rate": None if churn is None else str(churn.quantize(RATE)),
        "retention_rate": _rate(active_end - len(new_customers), active_start),
        "reactivations": sum(
            1
            for s in customer_steps
            if s.applied and s.applied.reactivation and _in(s.at, start, end)
        ),
        "csat": _rate(sum(1 for c in csat if c >= 4), len(csat)),
        "csat_answers": len(csat),
        "support_tickets_opened": sum(1 for s in tickets if props(s).status == "opened"),
        "support_tickets_solved": sum(1 for s in tickets if props(s).status == "solved"),
        "open_support_tickets": sum(1 if props(s).status == "opened" else -1 for s in all_tickets),
        "nps": None
        if not nps
        else str(
            (
                Decimal(100)
                * (sum(1 for x in nps if x >= 9) - sum(1 for x in nps if x <= 6))
                / len(nps)
            ).quantize(CENT)
        ),
        "nps_responses": len(nps),
        "reviews": len(ratings),
        "average_rating": None
        if not ratings
        else str((Decimal(sum(ratings)) / len(ratings)).quantize(CENT)),
        "referrals": len(by_type.get("referral", [])),
        "clv_historical": _money(life_revenue / len(life_customers)) if life_customers else None,
        "clv_predicted": _money(predicted),
        "clv_by_channel": clv_by_channel,
        "customers_by_stage": at_end,
    }


def truth_map(
    steps: list[Step],
    start: datetime,
    end: datetime,
    *,
    source: str | None = None,
    channel: str | None = None,
) -> dict[str, Any]:
    """The lifecycle map of ``[start, end)`` from the steps (medians as histogram bins)."""
    moves: dict[tuple[str, str], int] = {}
    stays: dict[str, list[timedelta]] = {}
    for s in steps:
        if s.applied is None or s.applied.transition is None:
            continue
        st, t = s.applied.state, s.applied.transition
        if (source is not None and st.first_source != source) or (
            channel is not None and (st.first_channel or "") != channel
        ):
            continue
        if not _in(t.at, start, end):
            continue
        key = (t.from_stage.value if t.from_stage else "", t.to_stage.value)
        moves[key] = moves.get(key, 0) + 1
        if s.before is not None:
            stays.setdefault(s.before.stage.value, []).append(t.at - s.before.stage_entered_at)
    medians: dict[str, int | None] = {}
    for stage in Stage:
        durations = sorted(stays.get(stage.value, []))
        if not durations:
            medians[stage.value] = None
        else:
            lower = durations[(len(durations) + 1) // 2 - 1]
            medians[stage.value] = round(stay_bin_middle(stay_bin(lower)).total_seconds())
    return {
        "transitions": [
            {"from": a or None, "to": b, "customers": n} for (a, b), n in sorted(moves.items())
        ],
        "median_seconds_in_stage": medians,
    }


def truth_cohorts(steps: list[Step], period: str) -> list[dict[str, Any]]:
    """Cohorts by the period of the first purchase: distinct purchasers per period since."""
    from clm_metrics.buckets import period_start
    from clm_metrics.repository import periods_between

    active: dict[Any, set[tuple[int, str]]] = {}
    for s in steps:
        if s.event.type != "purchase" or s.applied is None or s.applied.state.converted_at is None:
            continue
        cohort = period_start(period, s.applied.state.converted_at)
        since = periods_between(period, cohort, period_start(period, s.at))
        active.setdefault(cohort, set()).add((since, s.applied.state.customer_id))
    out = []
    for cohort in sorted(active):
        counts: dict[int, int] = {}
        for since, _ in active[cohort]:
            counts[since] = counts.get(since, 0) + 1
        size = counts.get(0, 0)
        out.append(
            {
                "cohort": cohort.isoformat(),
                "customers": size,
                "periods": [
                    {
                        "periods_since": n,
                        "purchasing_customers": v,
                        "share": _rate(v, size),
                    }
                    for n, v in sorted(counts.items())
                ],
            }
        )
    return out
