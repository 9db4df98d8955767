"""Customer KPIs of a :class:`~.window.Window`: revenue and orders, retention and churn,
service (tickets, CSAT, NPS, reviews, referrals) and lifetime value."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from clm_domain.events import Event
from clm_simulator.replay import Step, who
from clm_simulator.window import (
    CENT,
    RATE,
    ZERO,
    Window,
    amount_of,
    count_by,
    first_channel,
    money_str,
    props,
    rate_str,
)


def revenue(w: Window) -> dict[str, Any]:
    purchases, refunds = w.purchases, w.of_type("refund")
    frequency = w.purchase_frequency
    return {
        "purchases": len(purchases),
        "currency": w.currency,
        "revenue": money_str(w.revenue),
        "revenue_by_currency": revenue_by_currency(purchases),
        "average_order_value": money_str(w.average_order_value),
        "purchasing_customers": len(w.purchasers),
        "purchase_frequency": None if frequency is None else str(frequency.quantize(RATE)),
        "refunds": len(refunds),
        "refunded": money_str(amount_of(w.in_currency(refunds))),
        "refund_rate": rate_str(len(refunds), len(purchases)),
        "repeat_purchases": len(
            w.customer_steps_where(lambda s: bool(s.applied and s.applied.repeat_purchase))
        ),
        "repeat_purchase_rate": rate_str(len(repeat_purchasers(w)), len(w.purchasers)),
    }


def revenue_by_currency(purchases: list[Step]) -> dict[str, str | None]:
    totals: dict[str, Decimal] = {}
    for s in purchases:
        p = props(s)
        totals[p.currency] = totals.get(p.currency, ZERO) + p.amount
    return {c: money_str(v) for c, v in sorted(totals.items())}


def repeat_purchasers(w: Window) -> set[str | None]:
    """Customers with two or more orders in the window (DOMAIN.md)."""
    orders_of: dict[str | None, int] = {}
    for s in w.purchases:
        orders_of[who(s)] = orders_of.get(who(s), 0) + 1
    return {customer for customer, n in orders_of.items() if n >= 2}


def retention(w: Window) -> dict[str, Any]:
    churn = w.churn
    return {
        "churned": w.churned,
        "active_customers_at_start": w.active_at_start,
        "active_customers_at_end": w.active_at_end,
        "churn_rate": None if churn is None else str(churn.quantize(RATE)),
        "retention_rate": rate_str(w.active_at_end - len(w.new_customers), w.active_at_start),
        "reactivations": len(
            w.customer_steps_where(lambda s: bool(s.applied and s.applied.reactivation))
        ),
    }


def service(w: Window) -> dict[str, Any]:
    tickets = w.of_type("support_ticket")
    csat = [props(s).csat for s in tickets if props(s).csat is not None]
    ratings = [props(s).rating for s in w.of_type("review")]
    nps = [props(s).score for s in w.of_type("nps_response")]
    return {
        "csat": rate_str(sum(1 for c in csat if c >= 4), len(csat)),
        "csat_answers": len(csat),
        "support_tickets_opened": sum(1 for s in tickets if props(s).status == "opened"),
        "support_tickets_solved": sum(1 for s in tickets if props(s).status == "solved"),
        "open_support_tickets": open_tickets(w),
        "nps": net_promoter_score(nps),
        "nps_responses": len(nps),
        "reviews": len(ratings),
        "average_rating": None
        if not ratings
        else str((Decimal(sum(ratings)) / len(ratings)).quantize(CENT)),
        "referrals": len(w.of_type("referral")),
    }


def net_promoter_score(scores: list[int]) -> str | None:
    """Promoters (9-10) minus detractors (0-6), in percent of the answers."""
    if not scores:
        return None
    promoters = sum(1 for x in scores if x >= 9)
    detractors = sum(1 for x in scores if x <= 6)
    return str((Decimal(100) * (promoters - detractors) / len(scores)).quantize(CENT))


def ticket_spans(steps: list[Step]) -> dict[tuple[str, str], tuple[Event, datetime | None]]:
    """Per ``(customer, ticket id)`` with an open: its first open event and its first solve's
    time. A ticket is open from the one until the other (never, when solved at or before it
    opened); solves of tickets never opened count nothing."""
    opens: dict[tuple[str, str], Event] = {}
    solves: dict[tuple[str, str], datetime] = {}
    for s in steps:
        owner = who(s)
        if s.event.type != "support_ticket" or owner is None:
            continue
        key, at = (owner, str(props(s).ticket_id)), s.event.occurred_at
        if props(s).status == "opened":
            if key not in opens or at < opens[key].occurred_at:
                opens[key] = s.event
        elif key not in solves or at < solves[key]:
            solves[key] = at
    return {key: (first, solves.get(key)) for key, first in opens.items()}


def open_tickets(w: Window) -> int:
    """Tickets (of events matching the window's source and channel) open at its end."""
    return sum(
        1
        for first_open, solved_at in ticket_spans(w.steps).values()
        if w.event_matches(first_open)
        and first_open.occurred_at < w.end
        and (solved_at is None or solved_at >= w.end)
    )


def lifetime_value(w: Window) -> dict[str, Any]:
    """Historical lifetime value, and the predictive KPIs: the simulated world has no fitted
    model, so predicted CLV and expected purchases are unknown (null), as the metrics service
    answers before the stage engine's first fit."""
    buyers = [s for s in w.customer_steps if s.applied and s.applied.first_purchase]
    paid = w.in_currency(s for s in w.customer_steps if s.event.type == "purchase")
    return {
        "clv_historical": money_str(amount_of(paid) / len(buyers)) if buyers else None,
        "clv_predicted": None,
        "expected_purchases_90d": None,
        "clv_by_channel": clv_by_channel(w, buyers, paid),
    }


def clv_by_channel(w: Window, buyers: list[Step], paid: list[Step]) -> dict[str, Any]:
    """Historical lifetime value and CAC per first-touch channel, and their ratio."""
    revenue_of: dict[str, Decimal] = {}
    for s in paid:
        ch = first_channel(s)
        revenue_of[ch] = revenue_of.get(ch, ZERO) + props(s).amount
    buyers_of = count_by(buyers, first_channel)
    spent = set(w.spend_by_channel) | set(w.new_customers_by_channel)
    out = {}
    for ch in sorted(set(revenue_of) | set(buyers_of) | spent):
        hist = revenue_of.get(ch, ZERO) / buyers_of[ch] if buyers_of.get(ch) else None
        cac = w.channel_cac(ch)
        out[ch] = {
            "clv_historical": money_str(hist),
            "cac": money_str(cac),
            "clv_to_cac": None if hist is None or not cac else rate_str(hist, cac),
        }
    return out
