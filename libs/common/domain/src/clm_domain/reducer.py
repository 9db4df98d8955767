"""The pure stage reducer, driven by :mod:`clm_domain.rules`.

Pure and synchronous: no I/O, no clock (time comes from events, or is passed in as ``until``).

* :func:`advance` applies the time-based moves (``at_risk``, ``churned``) a customer went
  through between its last activity and a given time: inactivity, and (with the rule on and
  a model given) P(alive) falling below ``at_risk.p_alive_below`` (:mod:`clm_domain.p_alive`).
* :func:`apply_event` advances to the event's time, then applies the event's facts and rules.
* :func:`rebuild` folds a customer's whole event set in event-time order: the state is a
  function of the SET of events (and of ``until``), whatever order they arrived in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from clm_domain.bounds import add_money
from clm_domain.customer_state import (
    MIXED_CURRENCY,
    Applied,
    CustomerState,
    Transition,
    customer_key,
    event_order,
)
from clm_domain.events import (
    AdClick,
    EmailEngagement,
    Event,
    Identify,
    NpsResponse,
    Purchase,
    Referral,
    Refund,
    Review,
    Signup,
    SiteVisit,
    SubscriptionCancelled,
    SupportTicket,
)
from clm_domain.p_alive import AliveModel, predicted_lapse
from clm_domain.rules import LifecycleRules
from clm_domain.stages import ARC_RANK, CAN_LAPSE, CUSTOMER_STAGES, LAPSED, Stage


def advance(
    state: CustomerState,
    until: datetime,
    rules: LifecycleRules,
    model: AliveModel | None = None,
) -> tuple[CustomerState, list[Transition]]:
    """The time-based moves between the last activity and ``until`` (pure, idempotent):
    inactivity, and with ``at_risk.p_alive_below`` set and a ``model``, P(alive) falling
    below it (whichever comes first moves the customer to at_risk)."""
    moves: list[Transition] = []
    if state.stage not in CAN_LAPSE:
        return state, moves
    quiet_since = state.last_seen_at
    churned_at = quiet_since + timedelta(days=rules.churned.inactive_days)
    if state.stage in CUSTOMER_STAGES:
        at_risk_at, reason = _at_risk_time(state, rules, model)
        if until >= at_risk_at:
            state, t = _move(state, Stage.AT_RISK, at_risk_at, "", reason)
            moves.append(t)
    if state.stage is Stage.AT_RISK and until >= churned_at:
        state, t = _move(state, Stage.CHURNED, churned_at, "", "inactive")
        moves.append(t)
    return state, moves


def _at_risk_time(
    state: CustomerState, rules: LifecycleRules, model: AliveModel | None
) -> tuple[datetime, str]:
    """When a customer in a customer stage goes at risk, and why."""
    inactive_at = state.last_seen_at + timedelta(days=rules.at_risk.inactive_days)
    threshold = rules.at_risk.p_alive_below
    if model is None or threshold is None:
        return inactive_at, "inactive"
    lapse = predicted_lapse(state, model, threshold, inactive_at)
    if lapse is None:
        return inactive_at, "inactive"
    return lapse.at, lapse.reason


def _move(
    state: CustomerState, to: Stage, at: datetime, event_id: str, reason: str
) -> tuple[CustomerState, Transition]:
    moved = replace(state, stage=to, stage_entered_at=at)
    return moved, Transition(state.customer_id, state.stage, to, at, event_id, reason)


def apply_event(
    state: CustomerState | None,
    event: Event,
    rules: LifecycleRules,
    model: AliveModel | None = None,
) -> Applied:
    """Fold one event into a customer's state (pure): advance to its time (``model``: the
    predictive model the P(alive) rule reads, if any), then its rules.

    Apply events in :func:`event_order`; a late event needs :func:`rebuild` instead.
    """
    key = customer_key(event)
    if key is None:
        raise ValueError(f"{event.type} events carry no customer")
    at = event.occurred_at
    moves: list[Transition] = []
    if state is None:
        before = _new_state(key, event)
    else:
        before, moves = advance(state, at, rules, model)
    changes, target = _fact_changes(before, event, rules)
    purchases: int = changes.get("purchases", before.purchases)
    if state is None:
        stage, reason, reactivation = (*target, False)
    else:
        refunded = changes.get("refunded", before.refunded)
        full_refund = refunded >= changes.get("revenue", before.revenue)
        stage, reason, reactivation = _next_stage(before, event, target, full_refund, rules)
    if reactivation:
        changes["reactivations"] = before.reactivations + 1
    if state is None or stage != before.stage:
        changes.update(stage=stage, stage_entered_at=at)
        from_stage = None if state is None else before.stage
        moves.append(Transition(before.customer_id, from_stage, stage, at, event.event_id, reason))
    is_purchase = isinstance(event, Purchase)
    return Applied(
        state=replace(before, **changes),
        transitions=tuple(moves),
        first_purchase=is_purchase and purchases == 1,
        repeat_purchase=is_purchase and purchases >= 2,
        reactivation=reactivation,
    )


def _fact_changes(
    state: CustomerState, event: Event, rules: LifecycleRules
) -> tuple[dict[str, Any], tuple[Stage, str]]:
    """The facts the event changes (field name → new value), and the least arc stage it puts
    the customer in and why."""
    at = event.occurred_at
    changes = {**_touch(state, event), **_tally(state, event, rules)}
    purchases: int = changes.get("purchases", state.purchases)
    lead = _is_lead(event, purchases, changes.get("recent_visits", state.recent_visits), rules)
    if lead:
        changes["acquired_at"] = min(state.acquired_at or at, at)
    recent_purchases = changes.get("recent_purchases", state.recent_purchases)
    return changes, _target(event, purchases, recent_purchases, lead, rules)


def _new_state(key: str, event: Event) -> CustomerState:
    at = event.occurred_at
    return CustomerState(
        customer_id=key,
        stage=Stage.REACH,
        stage_entered_at=at,
        first_seen_at=at,
        last_seen_at=at,
        first_source=event.source,
        first_channel=event.channel,
        first_campaign=_campaign(event),
        last_event_source=event.source,
        last_event_id=event.event_id,
    )


def _touch(state: CustomerState, event: Event) -> dict[str, Any]:
    """The facts every event changes: the count, first touch, last activity, last event."""
    at = event.occurred_at
    changes: dict[str, Any] = {"events": state.events + 1}
    if at < state.first_seen_at:
        changes["first_seen_at"] = at
        changes["first_source"] = event.source
        changes["first_channel"] = event.channel
        changes["first_campaign"] = _campaign(event)
    if at > state.last_seen_at:
        changes["last_seen_at"] = at
    if event_order(event) >= state.order_key():
        changes["last_event_source"] = event.source
        changes["last_event_id"] = event.event_id
    return changes


def _tally(state: CustomerState, event: Event, rules: LifecycleRules) -> dict[str, Any]:
    """The running counts the event's type changes."""
    at = event.occurred_at
    match event:
        case Purchase():
            return {
                "purchases": state.purchases + 1,
                "revenue": add_money(state.revenue, event.properties.amount),
                "last_purchase_at": max(state.last_purchase_at or at, at),
                "converted_at": min(state.converted_at or at, at),
                "recent_purchases": _keep_recent(
                    state.recent_purchases, at, rules.loyalty.purchases
                ),
                **_purchase_days(state, event),
            }
        case Refund():
            return {
                "refunds": state.refunds + 1,
                "refunded": add_money(state.refunded, event.properties.amount),
            }
        case SupportTicket() if event.properties.status == "opened":
            return {"tickets_opened": state.tickets_opened + 1}
        case SupportTicket():
            return {"tickets_solved": state.tickets_solved + 1}
        case Review():
            return {
                "reviews": state.reviews + 1,
                "review_sum": state.review_sum + event.properties.rating,
            }
        case NpsResponse():
            return {"last_nps": event.properties.score}
        case Referral():
            return {"referrals": state.referrals + 1}
        case SiteVisit():
            visits = _keep_recent(state.recent_visits, at, rules.acquisition.visits)
            return {"recent_visits": visits}
    return {}


def _purchase_days(state: CustomerState, event: Purchase) -> dict[str, Any]:
    """The purchase-day facts after a purchase applied in event-time order (one transaction
    per UTC calendar day): a day other than the last purchase's is a new one, and a day other
    than the first purchase's is a repeat day, whose amount is repeat spend. Out of order
    (before the first purchase, or on a day between purchase days) they cannot be told from
    these facts: :func:`rebuild` refolds in order."""
    amount = event.properties.amount
    currency = event.properties.currency
    day = _utc_day(event.occurred_at)
    if state.converted_at is None or state.last_purchase_at is None:
        return {"purchase_days": 1, "purchase_currency": currency}
    changes: dict[str, Any] = {}
    if day != _utc_day(state.last_purchase_at):
        changes["purchase_days"] = state.purchase_days + 1
    if day != _utc_day(state.converted_at):
        changes["repeat_spend"] = add_money(state.repeat_spend, amount)
    if currency != state.purchase_currency and state.purchase_currency != MIXED_CURRENCY:
        changes["purchase_currency"] = MIXED_CURRENCY
    return changes


def _utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def _campaign(event: Event) -> str | None:
    """The campaign an ad click or email engagement came from (first-touch attribution)."""
    if isinstance(event, AdClick | EmailEngagement):
        return event.properties.campaign
    return None


def _within(times: tuple[datetime, ...], end: datetime, days: int) -> int:
    start = end - timedelta(days=days)
    return sum(1 for t in times if start <= t <= end)


def _keep_recent(times: tuple[datetime, ...], at: datetime, keep: int) -> tuple[datetime, ...]:
    return tuple(sorted((*times, at))[-keep:])


def _is_lead(
    event: Event, purchases: int, recent_visits: tuple[datetime, ...], rules: LifecycleRules
) -> bool:
    """Does this event (with the facts after it) make the customer a lead?"""
    acq = rules.acquisition
    match event:
        case Signup():
            return acq.signup
        case Identify():
            traits = event.properties.traits
            return acq.identify_with_email and bool(traits.get("email") or traits.get("email_hash"))
        case SiteVisit():
            return _within(recent_visits, event.occurred_at, acq.visits_within_days) >= acq.visits
        case SupportTicket():
            return acq.pre_purchase_ticket and purchases == 0
    return False


def _target(
    event: Event,
    purchases: int,
    recent_purchases: tuple[datetime, ...],
    lead: bool,
    rules: LifecycleRules,
) -> tuple[Stage, str]:
    """The least arc stage this event puts a customer in, and why (``purchases`` and
    ``recent_purchases``: the facts after it; ``lead``: whether it makes the customer a lead)."""
    loyal = rules.loyalty
    if isinstance(event, Purchase):
        recent = _within(recent_purchases, event.occurred_at, loyal.purchases_within_days)
        if recent >= loyal.purchases:
            return Stage.LOYALTY, "frequent purchases"
        if purchases >= rules.retention.purchases:
            return Stage.RETENTION, "repeat purchase"
        return Stage.CONVERSION, "first purchase"
    if purchases >= 1:  # converted: the loyalty signals count
        loyalty = _loyalty_signal(event, rules)
        if loyalty is not None:
            return Stage.LOYALTY, loyalty
    if lead:
        return Stage.ACQUISITION, f"lead: {event.type}"
    return Stage.REACH, event.type


def _loyalty_signal(event: Event, rules: LifecycleRules) -> str | None:
    """The loyalty signal a converted customer's event gives, if any."""
    loyal = rules.loyalty
    match event:
        case Review() if (
            loyal.review_min_rating is not None
            and event.properties.rating >= loyal.review_min_rating
        ):
            return "good review"
        case NpsResponse() if (
            loyal.nps_min_score is not None and event.properties.score >= loyal.nps_min_score
        ):
            return "nps promoter"
        case Referral() if loyal.referral:
            return "referral"
    return None


def _next_stage(
    before: CustomerState,
    event: Event,
    target: tuple[Stage, str],
    full_refund: bool,
    rules: LifecycleRules,
) -> tuple[Stage, str, bool]:
    """The stage a known customer moves to, why, and whether it is a reactivation (``target``:
    the least arc stage the event puts it in; ``full_refund``: refunded the whole revenue)."""
    current = before.stage
    stage, reason = target
    if isinstance(event, Purchase) and current in LAPSED:
        return Stage.RETENTION, "reactivation", True
    if isinstance(event, SubscriptionCancelled) and rules.churned.subscription_cancelled:
        if current in CUSTOMER_STAGES or current is Stage.AT_RISK:
            return Stage.CHURNED, "subscription cancelled", False
        return current, reason, False
    if (
        isinstance(event, Refund)
        and rules.refund.full_refund_of_only_order_to_acquisition
        and current in CUSTOMER_STAGES
        and before.purchases == 1
        and full_refund
    ):
        return Stage.ACQUISITION, "full refund of the only order", False
    if current not in LAPSED and ARC_RANK[stage] > ARC_RANK[current]:
        return stage, reason, False
    return current, reason, False


def is_late(state: CustomerState | None, event: Event) -> bool:
    """Would applying ``event`` after ``state`` break event-time order?

    Also when the customer was moved by inactivity at a time after the event: the event shows
    activity the move did not know of, so the move's time (or the move itself) changes.
    """
    if state is None:
        return False
    if event_order(event) < state.order_key():
        return True
    return state.stage in LAPSED and event.occurred_at < state.stage_entered_at


def rebuild(
    key: str,
    events: Sequence[Event],
    rules: LifecycleRules,
    until: datetime | None = None,
    model: AliveModel | None = None,
) -> CustomerState | None:
    """A customer's state from its whole event set (any order), advanced to ``until``, under
    ``model`` (the P(alive) rule's: another model version can move the customer otherwise)."""
    state: CustomerState | None = None
    for event in sorted(events, key=event_order):
        state = apply_event(state, event, rules, model).state
    if state is not None:
        state = replace(state, customer_id=key)
        if until is not None:
            state, _ = advance(state, until, rules, model)
    return state
