"""Traffic and acquisition KPIs of a :class:`~.window.Window`: visits, leads, conversions,
marketing spend and customer acquisition cost, per channel and per campaign."""

from __future__ import annotations

from typing import Any

from clm_simulator.window import ZERO, Window, count_by, money_str, props, rate_str


def traffic(w: Window) -> dict[str, Any]:
    visits = w.of_type("site_visit")
    return {
        "events": len(w.events),
        "site_visits": len(visits),
        "ad_clicks": len(w.of_type("ad_click")),
        "unique_visitors": len(w.visitors),
        "visits_by_channel": dict(
            sorted(count_by(visits, lambda s: s.event.channel or "").items())
        ),
        "visits_by_source": dict(sorted(count_by(visits, lambda s: s.event.source).items())),
    }


def acquisition(w: Window) -> dict[str, Any]:
    leads, new = w.leads, w.new_customers
    converted = converted_leads(w)
    spend = sum((props(s).amount for s in w.spend), ZERO)
    return {
        "leads": len(leads),
        "converted_leads": len(converted),
        "lead_conversion_rate": rate_str(len(converted), len(leads)),
        "marketing_spend": money_str(spend),
        "cac": money_str(spend / len(new)) if new else None,
        "cac_by_channel": cac_by_channel(w),
        "campaigns": campaigns(w),
        "new_customers": len(new),
        "conversion_rate_visitors": rate_str(len(new), len(w.visitors)),
        "conversion_rate_leads": rate_str(len(new), len(leads)),
    }


def converted_leads(w: Window) -> list[Any]:
    """First purchases of customers who became leads in the window (whenever they bought)."""
    return [
        s
        for s in w.customer_steps
        if s.applied
        and s.applied.first_purchase
        and s.applied.state.acquired_at is not None
        and w.contains(s.applied.state.acquired_at)
    ]


def cac_by_channel(w: Window) -> dict[str, dict[str, Any]]:
    channels = sorted(set(w.spend_by_channel) | set(w.new_customers_by_channel))
    return {
        ch: {
            "spend": money_str(w.spend_by_channel.get(ch, ZERO)),
            "new_customers": w.new_customers_by_channel.get(ch, 0),
            "cac": money_str(w.channel_cac(ch)),
        }
        for ch in channels
    }


def campaigns(w: Window) -> dict[str, dict[str, Any]]:
    """Spend, leads and new customers per campaign (customers by their first campaign)."""
    found: dict[str, dict[str, Any]] = {}
    for s in w.spend:
        entry = found.setdefault(props(s).campaign, {"spend": ZERO})
        entry["spend"] += props(s).amount
    for name, steps in (("leads", w.leads), ("customers", w.new_customers)):
        for s in steps:
            if s.applied and (c := s.applied.state.first_campaign) is not None:
                entry = found.setdefault(c, {"spend": ZERO})
                entry[name] = entry.get(name, 0) + 1
    return {
        c: {
            "spend": money_str(v["spend"]),
            "leads": v.get("leads", 0),
            "customers": v.get("customers", 0),
            "cac": money_str(v["spend"] / v["customers"]) if v.get("customers") else None,
        }
        for c, v in sorted(found.items())
    }
