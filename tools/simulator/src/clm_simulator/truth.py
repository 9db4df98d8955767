"""Brute-force truth of a journey set: expected stages and KPIs, recomputed from raw events.

Events are replayed customer by customer (by event time) with the pure stage reducer; then each
KPI of a window is counted straight from the replayed steps. No buckets, no rollups, no SQL:
the reference the metrics service is compared with (tests), and what ``clm simulate --truth``
writes.

Time: the stage engine applies inactivity moves (``at_risk``, ``churned``) when a later event
comes (at the time they happened), and otherwise its sweeper applies them from its clock. A
truth is therefore stated *as of* an instant: :func:`sweeps` gives the moves a sweeper running
at that instant makes, and :func:`truth` counts them with the events' own moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clm_domain.events import Event, MarketingSpend, parse_event
from clm_domain.kpis import window_bounds
from clm_domain.lifecycle import (
    Applied,
    CustomerState,
    Stage,
    Transition,
    advance,
    apply_event,
    customer_key,
    event_order,
)
from clm_domain.rules import LifecycleRules

RULES = LifecycleRules()
#: Customers counted as active (churn and retention rates), as the metrics service does.
ACTIVE_STAGES = ("conversion", "retention", "loyalty", "at_risk")
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


@dataclass(frozen=True, slots=True)
class Sweep:
    """The inactivity moves a sweeper makes for one customer (``kind: time`` records)."""

    before: CustomerState
    after: CustomerState
    moves: tuple[Transition, ...]


def replay(
    docs: list[dict[str, Any]],
    *,
    now: datetime,
    rules: LifecycleRules = RULES,
    keys: Callable[[Event], str | None] = customer_key,
) -> list[Step]:
    """Apply every event in order (per customer, by event time) with the stage reducer and the
    rules (default: the documented ones; an explicit cancellation churns, as the stage engine
    does). ``now`` bounds future timestamps, as the ingest does. ``keys`` names the customer
    an event counts for (default: its own id; :mod:`.survivors` folds merged profiles)."""
    events = [parse_event(d, now=now) for d in docs]
    events.sort(key=event_order)
    state: dict[str, CustomerState] = {}
    steps = []
    for event in events:
        key = keys(event)
        if key is None:
            steps.append(Step(event, None, None))
            continue
        before = state.get(key)
        applied = keyed(apply_event(before, event, rules), key)
        state[key] = applied.state
        steps.append(Step(event, before, applied))
    return steps


def keyed(applied: Applied, key: str) -> Applied:
    """``applied`` as the customer ``key``'s (an event of a profile merged into it)."""
    if applied.state.customer_id == key:
        return applied
    moves = tuple(
        Transition(key, t.from_stage, t.to_stage, t.at, t.event_id, t.reason)
        for t in applied.transitions
    )
    return replace(applied, state=replace(applied.state, customer_id=key), transitions=moves)


def who(step: Step) -> str | None:
    """The customer a step counts for (None: marketing spend)."""
    return None if step.applied is None else step.applied.state.customer_id


def final_states(steps: list[Step]) -> dict[str, CustomerState]:
    """Each customer's state after its last event."""
    return {s.applied.state.customer_id: s.applied.state for s in steps if s.applied is not None}


def sweeps(steps: list[Step], until: datetime, rules: LifecycleRules = RULES) -> list[Sweep]:
    """The moves a sweeper with clock ``until`` makes after every event was applied."""
    out = []
    for state in final_states(steps).values():
        after, moves = advance(state, until, rules)
        if moves:
            out.append(Sweep(state, after, tuple(moves)))
    return out


def stages_as_of(
    steps: list[Step], until: datetime, rules: LifecycleRules = RULES
) -> dict[str, Stage]:
    """Every customer's stage as of ``until`` (its events, then the sweeper's moves)."""
    stages = {key: state.stage for key, state in final_states(steps).items()}
    for sweep in sweeps(steps, until, rules):
        stages[sweep.after.customer_id] = sweep.after.stage
    return stages


def next_inactivity_move(
    steps: list[Step], until: datetime, rules: LifecycleRules = RULES
) -> datetime | None:
    """The first time after ``until`` at which some customer would move by inactivity (until
    then, with no new event, every stage stays what :func:`stages_as_of` says)."""
    far = datetime.max.replace(tzinfo=UTC)
    later: list[datetime] = []
    for state in final_states(steps).values():
        current, _ = advance(state, until, rules)
        _, moves = advance(current, far, rules)
        later.extend(m.at for m in moves)
    return min(later, default=None)


def props(step: Step) -> Any:
    """The event's properties (typed per event type; read here by name)."""
    return step.event.properties


def in_window(at: datetime, start: datetime, end: datetime) -> bool:
    """Is ``at`` in ``[start, end)`` at minute resolution (the metrics buckets by minute)?"""
    return start <= at.astimezone(UTC).replace(second=0, microsecond=0) < end


def rate_str(n: Decimal | int, d: Decimal | int) -> str | None:
    return None if d == 0 else str((Decimal(n) / Decimal(d)).quantize(RATE))


def money_str(v: Decimal | None) -> str | None:
    return None if v is None else str(v.quantize(CENT))


def stages_at(
    steps: list[Step],
    at: datetime,
    source: str | None,
    channel: str | None,
    swept: list[Sweep] | tuple[()] = (),
) -> dict[str, int]:
    """Customers per stage at an instant (by each customer's last move before it)."""
    last: dict[str, tuple[str, str, str]] = {}
    moves = [
        (s.applied.state, t) for s in steps if s.applied is not None for t in s.applied.transitions
    ]
    moves += [(w.after, t) for w in swept for t in w.moves]  # after each one's events
    for st, t in moves:
        if t.at.replace(second=0, microsecond=0) < at:
            last[st.customer_id] = (t.to_stage.value, st.first_source, st.first_channel or "")
    out = {s.value: 0 for s in Stage}
    for stage, src, ch in last.values():
        if (source is None or src == source) and (channel is None or ch == channel):
            out[stage] += 1
    return out


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


def truth(
    steps: list[Step],
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    reporting_currency: str = "USD",
    source: str | None = None,
    channel: str | None = None,
    swept: list[Sweep] | tuple[()] = (),
) -> dict[str, Any]:
    """Every KPI of ``[start, end)`` recomputed from the steps and the sweeper's moves
    (``swept``, see :func:`sweeps`), with exact distinct counts."""
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

    window = [s for s in steps if in_window(s.at, start, end) and ev_ok(s.event)]
    customer_steps = [s for s in steps if s.applied is not None and cu_ok(s)]
    by_type: dict[str, list[Step]] = {}
    for s in window:
        by_type.setdefault(s.event.type, []).append(s)
    purchases = by_type.get("purchase", [])
    rc_purchases = [s for s in purchases if props(s).currency == rc]
    revenue = sum((props(s).amount for s in rc_purchases), ZERO)
    visits = by_type.get("site_visit", [])
    visitors = {who(s) for s in visits}
    purchasers = {who(s) for s in purchases}
    # repeat purchasers: customers with two or more orders in the window (DOMAIN.md)
    orders_of: dict[str | None, int] = {}
    for s in purchases:
        orders_of[who(s)] = orders_of.get(who(s), 0) + 1
    repeaters = {who for who, n in orders_of.items() if n >= 2}

    # every move at its own time (one event may cause several: at risk, churned, reactivated)
    moves_in_window = [
        (s, t)
        for s in customer_steps
        if s.applied is not None
        for t in s.applied.transitions
        if in_window(t.at, start, end)
    ]
    leads = [
        s
        for s, t in moves_in_window
        if t.to_stage == Stage.ACQUISITION and t.from_stage in (None, Stage.REACH)
    ]
    new_customers = [
        s
        for s in customer_steps
        if s.applied and s.applied.first_purchase and in_window(s.at, start, end)
    ]
    converted_leads = [
        s
        for s in customer_steps
        if s.applied
        and s.applied.first_purchase
        and s.applied.state.acquired_at is not None
        and in_window(s.applied.state.acquired_at, start, end)
    ]
    spends = [
        s
        for s in steps
        if isinstance(s.event, MarketingSpend)
        and in_window(props(s).period_start, start, end)
        and (source is None or s.event.source == source)
        and (channel is None or props(s).channel == channel)
    ]
    rc_spend = [s for s in spends if props(s).currency == rc]
    spend = sum((props(s).amount for s in rc_spend), ZERO)
    churned = [t for _, t in moves_in_window if t.to_stage == Stage.CHURNED]
    swept_churned = [
        t
        for w in swept
        if (source is None or w.after.first_source == source)
        and (channel is None or (w.after.first_channel or "") == channel)
        for t in w.moves
        if t.to_stage == Stage.CHURNED and in_window(t.at, start, end)
    ]
    churned_count = len(churned) + len(swept_churned)
    at_start = stages_at(steps, start, source, channel, swept)
    at_end = stages_at(steps, end, source, channel, swept)
    active_start = sum(at_start[s] for s in ACTIVE_STAGES)
    active_end = sum(at_end[s] for s in ACTIVE_STAGES)
    churn = None if active_start == 0 else Decimal(churned_count) / active_start
    aov = None if not rc_purchases else revenue / len(rc_purchases)
    frequency = None if not purchasers else Decimal(len(purchases)) / len(purchasers)
    predicted = None
    if aov is not None and frequency is not None and churn:
        predicted = aov * frequency / churn
    tickets = by_type.get("support_ticket", [])
    csat = [props(s).csat for s in tickets if props(s).csat is not None]
    nps = [props(s).score for s in by_type.get("nps_response", [])]
    ratings = [props(s).rating for s in by_type.get("review", [])]
    open_tickets = sum(
        1
        for first_open, solved_at in ticket_spans(steps).values()
        if ev_ok(first_open)
        and first_open.occurred_at < end
        and (solved_at is None or solved_at >= end)
    )
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
            "spend": money_str(spend_by_ch.get(ch, ZERO)),
            "new_customers": cust_by_ch.get(ch, 0),
            "cac": money_str(spend_by_ch.get(ch, ZERO) / cust_by_ch[ch])
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
            "spend": money_str(v["spend"]),
            "leads": v.get("leads", 0),
            "customers": v.get("customers", 0),
            "cac": money_str(v["spend"] / v["customers"]) if v.get("customers") else None,
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
            "clv_historical": money_str(hist),
            "cac": money_str(cac),
            "clv_to_cac": None if hist is None or not cac else rate_str(hist, cac),
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
        "lead_conversion_rate": rate_str(len(converted_leads), len(leads)),
        "marketing_spend": money_str(spend),
        "cac": money_str(spend / len(new_customers)) if new_customers else None,
        "cac_by_channel": cac_by_channel,
        "campaigns": campaign_out,
        "new_customers": len(new_customers),
        "conversion_rate_visitors": rate_str(len(new_customers), len(visitors)),
        "conversion_rate_leads": rate_str(len(new_customers), len(leads)),
        "purchases": len(purchases),
        "currency": rc,
        "revenue": money_str(revenue),
        "revenue_by_currency": {c: money_str(v) for c, v in sorted(currencies.items())},
        "average_order_value": money_str(aov),
        "purchasing_customers": len(purchasers),
        "purchase_frequency": None if frequency is None else str(frequency.quantize(RATE)),
        "refunds": len(by_type.get("refund", [])),
        "refunded": money_str(
            sum(
                (props(s).amount for s in by_type.get("refund", []) if props(s).currency == rc),
                ZERO,
            )
        ),
        "refund_rate": rate_str(len(by_type.get("refund", [])), len(purchases)),
        "repeat_purchases": sum(
            1
            for s in customer_steps
            if s.applied and s.applied.repeat_purchase and in_window(s.at, start, end)
        ),
        "repeat_purchase_rate": rate_str(len(repeaters), len(purchasers)),
        "churned": churned_count,
        "active_customers_at_start": active_start,
        "active_customers_at_end": active_end,
        "churn_rate": None if churn is None else str(churn.quantize(RATE)),
        "retention_rate": rate_str(active_end - len(new_customers), active_start),
        "reactivations": sum(
            1
            for s in customer_steps
            if s.applied and s.applied.reactivation and in_window(s.at, start, end)
        ),
        "csat": rate_str(sum(1 for c in csat if c >= 4), len(csat)),
        "csat_answers": len(csat),
        "support_tickets_opened": sum(1 for s in tickets if props(s).status == "opened"),
        "support_tickets_solved": sum(1 for s in tickets if props(s).status == "solved"),
        "open_support_tickets": open_tickets,
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
        "clv_historical": money_str(life_revenue / len(life_customers)) if life_customers else None,
        "clv_predicted": money_str(predicted),
        "clv_by_channel": clv_by_channel,
        "customers_by_stage": at_end,
    }


TRUTH_SCHEMA = "clm.simulate.truth.v1"
TRUTH_NOTE = (
    "Stages and KPIs as of `as_of`: every event applied by the stage reducer, then the "
    "inactivity moves a sweeper running at `as_of` makes. Until `valid_until` (null: never) no "
    "customer crosses another inactivity threshold, so once the stage engine has applied every "
    "event and its sweeper has run, a stage read at any time in [as_of, valid_until) equals "
    "`customers[id].stage`. Each KPI window is the `[from, to)` range of its `query`."
)


def truth_document(
    docs: list[dict[str, Any]],
    *,
    as_of: datetime,
    windows: dict[str, timedelta],
    rules: LifecycleRules = RULES,
    reporting_currency: str = "USD",
    personas: dict[str, str] | None = None,
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The truth file of ``clm simulate --truth``: stages per customer and KPIs per window."""
    steps = replay(docs, now=as_of, rules=rules)
    swept = sweeps(steps, as_of, rules)
    stages = stages_as_of(steps, as_of, rules)
    valid_until = next_inactivity_move(steps, as_of, rules)
    customers: dict[str, dict[str, str]] = {}
    for key in sorted(stages):
        entry = {"stage": stages[key].value}
        if personas and key in personas:
            entry["persona"] = personas[key]
        customers[key] = entry
    kpis = {}
    for name, span in windows.items():
        start, end = window_bounds(as_of, span)
        kpis[name] = {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "query": f"/v1/kpis?from={_q(start)}&to={_q(end)}",
            "kpis": truth(
                steps,
                start,
                end,
                now=as_of,
                reporting_currency=reporting_currency,
                swept=swept,
            ),
        }
    counts = {s.value: 0 for s in Stage}
    for stage in stages.values():
        counts[stage.value] += 1
    return {
        "schema": TRUTH_SCHEMA,
        "note": TRUTH_NOTE,
        "as_of": as_of.isoformat(),
        "valid_until": None if valid_until is None else valid_until.isoformat(),
        **(about or {}),
        "events": len(docs),
        "stage_counts": counts,
        "customers": customers,
        "kpis": kpis,
    }


def _q(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
