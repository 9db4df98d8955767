"""The lifecycle model: stages and the pure stage reducer, driven by :mod:`clm_domain.rules`.

Pure and synchronous: no I/O, no clock (time comes from events, or is passed in as ``until``).

* :func:`advance` applies the time-based moves (``at_risk``, ``churned``) a customer went
  through between its last activity and a given time.
* :func:`apply_event` advances to the event's time, then applies the event's facts and rules.
* :func:`rebuild` folds a customer's whole event set in event-time order: the state is a
  function of the SET of events (and of ``until``), whatever order they arrived in. The stage
  engine folds in-order arrivals incrementally and rebuilds when a late event comes; both give
  the same answer (property-tested).

Stages move forward along the arc; the only backward moves are the defined ones: inactivity
(→ ``at_risk`` → ``churned``), an explicit cancellation (→ ``churned``), a full refund of the
only order (→ ``acquisition``), and a correction when a late event rewrites the past.

The event kinds are told apart with ``type(event) is Purchase``, not ``isinstance``: the
event models are a closed union of classes nothing derives from, and pydantic's metaclass
makes every ``isinstance`` that does not match exactly a call through it (ten an event).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar, cast

from clm_domain.bounds import add_money
from clm_domain.events import (
    AdClick,
    EmailEngagement,
    Event,
    Identify,
    MarketingSpend,
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
from clm_domain.rules import LifecycleRules

T = TypeVar("T")


class Stage(StrEnum):
    """Lifecycle stages: the five-step arc plus the two ways out of it."""

    REACH = "reach"
    ACQUISITION = "acquisition"
    CONVERSION = "conversion"
    RETENTION = "retention"
    LOYALTY = "loyalty"
    AT_RISK = "at_risk"
    CHURNED = "churned"


#: The other vocabulary in common use for the arc, accepted wherever a stage is named.
STAGE_ALIASES: dict[str, Stage] = {
    "awareness": Stage.REACH,
    "consideration": Stage.ACQUISITION,
    "purchase": Stage.CONVERSION,
    "advocacy": Stage.LOYALTY,
}
#: Display names per vocabulary (``CLM_STAGE_VOCABULARY``).
VOCABULARIES: dict[str, dict[Stage, str]] = {
    "standard": {s: s.value for s in Stage},
    "classic": {
        **{s: s.value for s in Stage},
        Stage.REACH: "awareness",
        Stage.ACQUISITION: "consideration",
        Stage.CONVERSION: "purchase",
        Stage.LOYALTY: "advocacy",
    },
}

ARC: tuple[Stage, ...] = (
    Stage.REACH,
    Stage.ACQUISITION,
    Stage.CONVERSION,
    Stage.RETENTION,
    Stage.LOYALTY,
)
_RANK = {stage: rank for rank, stage in enumerate(ARC)}
LAPSED = frozenset({Stage.AT_RISK, Stage.CHURNED})
CUSTOMER_STAGES = frozenset({Stage.CONVERSION, Stage.RETENTION, Stage.LOYALTY})
CAN_LAPSE = CUSTOMER_STAGES | {Stage.AT_RISK}  # the stages inactivity moves on from


#: Every name ``parse_stage`` takes (lower-case): the stages and their aliases.
STAGE_NAMES: tuple[str, ...] = (*(s.value for s in Stage), *STAGE_ALIASES)


def parse_stage(name: str) -> Stage:
    """A stage from its name or alias (``awareness`` → ``reach``); ValueError if unknown."""
    key = name.strip().lower()
    if key in STAGE_ALIASES:
        return STAGE_ALIASES[key]
    return Stage(key)


def event_order(event: Event) -> tuple[datetime, str, str]:
    """The total order events are applied in: event time, then source and id (ties)."""
    return (event.occurred_at, event.source, event.event_id)


@dataclass(frozen=True, slots=True)
class CustomerState:
    """A customer's stage and the running facts rules and KPIs use."""

    customer_id: str
    stage: Stage
    stage_entered_at: datetime
    first_seen_at: datetime
    last_seen_at: datetime
    first_source: str
    first_channel: str | None = None
    first_campaign: str | None = None
    acquired_at: datetime | None = None
    converted_at: datetime | None = None
    last_purchase_at: datetime | None = None
    purchases: int = 0
    revenue: Decimal = Decimal(0)
    refunds: int = 0
    refunded: Decimal = Decimal(0)
    tickets_opened: int = 0
    tickets_solved: int = 0
    reviews: int = 0
    review_sum: int = 0
    last_nps: int | None = None
    referrals: int = 0
    reactivations: int = 0
    events: int = 0
    last_event_source: str = ""
    last_event_id: str = ""
    recent_visits: tuple[datetime, ...] = field(default=())
    recent_purchases: tuple[datetime, ...] = field(default=())

    def order_key(self) -> tuple[datetime, str, str]:
        """The order key of the last event applied (see :func:`event_order`)."""
        return (self.last_seen_at, self.last_event_source, self.last_event_id)


_STATE_FIELDS = tuple(f.name for f in fields(CustomerState))
_state_values = operator.attrgetter(*_STATE_FIELDS)
_FIELD_INDEX = {name: index for index, name in enumerate(_STATE_FIELDS)}


def positional(cls: type[T]) -> Callable[..., T]:
    """``cls(*values)`` (every field, in order) at about half the cost, for a frozen slots
    dataclass on a hot path.

    A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``: a global,
    an attribute and a by-name slot look-up per field, and the reducer and the row decoding
    make a state (27 fields), a transition and a result per event. This sets the slots
    through their descriptors, each bound once; the object is as frozen as any other
    afterwards. Built the way :mod:`dataclasses` builds ``__init__``: from source, once.
    """
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    setters = {f"_set_{name}": getattr(cls, name).__set__ for name in names}
    source = "\n".join(
        [
            f"def make({', '.join(names)}):",
            "    obj = _new(_cls)",
            *(f"    _set_{name}(obj, {name})" for name in names),
            "    return obj",
        ]
    )
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, **setters}
    exec(source, namespace)  # noqa: S102 - the source is made of the class's own field names
    return cast(Callable[..., T], namespace["make"])


#: ``CustomerState(*values)`` for hot paths: every field, positionally (see positional).
make_state = positional(CustomerState)


def evolve(state: CustomerState, changes: dict[str, object]) -> CustomerState:
    """``dataclasses.replace(state, **changes)`` for the hot path.

    Same result, a few times cheaper: one C-level read of every field and a positional
    constructor call, instead of replace's per-field introspection.
    """
    values = list(_state_values(state))
    for name, value in changes.items():
        values[_FIELD_INDEX[name]] = value
    return make_state(*values)


@dataclass(frozen=True, slots=True)
class Transition:
    """One stage move, as recorded in the history and sent downstream."""

    customer_id: str
    from_stage: Stage | None
    to_stage: Stage
    at: datetime
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying an event gave: the new state and the moves it caused (oldest first)."""

    state: CustomerState
    transitions: tuple[Transition, ...] = ()
    first_purchase: bool = False
    repeat_purchase: bool = False
    reactivation: bool = False

    @property
    def transition(self) -> Transition | None:
        """The last move, if any."""
        return self.transitions[-1] if self.transitions else None


#: ``Transition(*values)`` and ``Applied(*values)`` for the reducer (see positional).
_transition = positional(Transition)
_applied = positional(Applied)


def customer_key(event: Event) -> str | None:
    """The id a customer's state is kept under (None: the event has no customer)."""
    if type(event) is MarketingSpend:
        return None
    return event.customer_id or event.anonymous_id


def _move(
    state: CustomerState, to: Stage, at: datetime, event_id: str, reason: str
) -> tuple[CustomerState, Transition]:
    moved = evolve(state, {"stage": to, "stage_entered_at": at})
    return moved, _transition(state.customer_id, state.stage, to, at, event_id, reason)


def advance(
    state: CustomerState, until: datetime, rules: LifecycleRules
) -> tuple[CustomerState, list[Transition]]:
    """The inactivity moves between the last activity and ``until`` (pure, idempotent)."""
    moves: list[Transition] = []
    if state.stage not in CAN_LAPSE:
        return state, moves
    quiet_since = state.last_seen_at
    at_risk_at = quiet_since + timedelta(days=rules.at_risk.inactive_days)
    churned_at = quiet_since + timedelta(days=rules.churned.inactive_days)
    if state.stage in CUSTOMER_STAGES and until >= at_risk_at:
        state, t = _move(state, Stage.AT_RISK, at_risk_at, "", "inactive")
        moves.append(t)
    if state.stage is Stage.AT_RISK and until >= churned_at:
        state, t = _move(state, Stage.CHURNED, churned_at, "", "inactive")
        moves.append(t)
    return state, moves


def _within(times: tuple[datetime, ...], end: datetime, days: int) -> int:
    start = end - timedelta(days=days)
    n = 0
    for t in times:  # a handful of times: a plain loop beats sum() over a generator
        if start <= t <= end:
            n += 1
    return n


def _keep_recent(times: tuple[datetime, ...], at: datetime, keep: int) -> tuple[datetime, ...]:
    if not times or at >= times[-1]:  # in order (the usual case): no sort
        return (*times, at)[-keep:]
    return tuple(sorted((*times, at))[-keep:])


# Positions of the fields apply_event changes, in the values list it builds the new state from.
_EVENTS = _FIELD_INDEX["events"]
_FIRST_SEEN_AT = _FIELD_INDEX["first_seen_at"]
_FIRST_SOURCE = _FIELD_INDEX["first_source"]
_FIRST_CHANNEL = _FIELD_INDEX["first_channel"]
_FIRST_CAMPAIGN = _FIELD_INDEX["first_campaign"]
_LAST_SEEN_AT = _FIELD_INDEX["last_seen_at"]
_LAST_EVENT_SOURCE = _FIELD_INDEX["last_event_source"]
_LAST_EVENT_ID = _FIELD_INDEX["last_event_id"]
_PURCHASES = _FIELD_INDEX["purchases"]
_REVENUE = _FIELD_INDEX["revenue"]
_LAST_PURCHASE_AT = _FIELD_INDEX["last_purchase_at"]
_CONVERTED_AT = _FIELD_INDEX["converted_at"]
_RECENT_PURCHASES = _FIELD_INDEX["recent_purchases"]
_REFUNDS = _FIELD_INDEX["refunds"]
_REFUNDED = _FIELD_INDEX["refunded"]
_TICKETS_OPENED = _FIELD_INDEX["tickets_opened"]
_TICKETS_SOLVED = _FIELD_INDEX["tickets_solved"]
_REVIEWS = _FIELD_INDEX["reviews"]
_REVIEW_SUM = _FIELD_INDEX["review_sum"]
_LAST_NPS = _FIELD_INDEX["last_nps"]
_REFERRALS = _FIELD_INDEX["referrals"]
_RECENT_VISITS = _FIELD_INDEX["recent_visits"]
_ACQUIRED_AT = _FIELD_INDEX["acquired_at"]
_REACTIVATIONS = _FIELD_INDEX["reactivations"]
_STAGE = _FIELD_INDEX["stage"]
_STAGE_ENTERED_AT = _FIELD_INDEX["stage_entered_at"]


def _facts(state: CustomerState, event: Event, rules: LifecycleRules, v: list[Any]) -> bool:
    """Write the running facts the event changes (everything but the stage) into ``v``, the
    new state's values; return whether the event makes the customer a lead."""
    at = event.occurred_at
    v[_EVENTS] = state.events + 1
    if at < state.first_seen_at:
        v[_FIRST_SEEN_AT] = at
        v[_FIRST_SOURCE] = event.source
        v[_FIRST_CHANNEL] = event.channel
        v[_FIRST_CAMPAIGN] = _campaign(event)
    if at > state.last_seen_at:
        v[_LAST_SEEN_AT] = at
    if (at, event.source, event.event_id) >= state.order_key():
        v[_LAST_EVENT_SOURCE] = event.source
        v[_LAST_EVENT_ID] = event.event_id
    if type(event) is Purchase:
        v[_PURCHASES] = state.purchases + 1
        v[_REVENUE] = add_money(state.revenue, event.properties.amount)
        v[_LAST_PURCHASE_AT] = max(state.last_purchase_at or at, at)
        v[_CONVERTED_AT] = min(state.converted_at or at, at)
        v[_RECENT_PURCHASES] = _keep_recent(state.recent_purchases, at, rules.loyalty.purchases)
    elif type(event) is Refund:
        v[_REFUNDS] = state.refunds + 1
        v[_REFUNDED] = add_money(state.refunded, event.properties.amount)
    elif type(event) is SupportTicket:
        if event.properties.status == "opened":
            v[_TICKETS_OPENED] = state.tickets_opened + 1
        else:
            v[_TICKETS_SOLVED] = state.tickets_solved + 1
    elif type(event) is Review:
        v[_REVIEWS] = state.reviews + 1
        v[_REVIEW_SUM] = state.review_sum + event.properties.rating
    elif type(event) is NpsResponse:
        v[_LAST_NPS] = event.properties.score
    elif type(event) is Referral:
        v[_REFERRALS] = state.referrals + 1
    elif type(event) is SiteVisit:
        v[_RECENT_VISITS] = _keep_recent(state.recent_visits, at, rules.acquisition.visits)
    lead = _is_lead(event, v[_PURCHASES], v[_RECENT_VISITS], rules)
    if lead:
        v[_ACQUIRED_AT] = min(state.acquired_at or at, at)
    return lead


def _campaign(event: Event) -> str | None:
    """The campaign an ad click or email engagement came from (first-touch attribution)."""
    if type(event) is AdClick or type(event) is EmailEngagement:
        return event.properties.campaign
    return None


def _has_email(event: Identify) -> bool:
    traits = event.properties.traits
    return bool(traits.get("email") or traits.get("email_hash"))


def _is_lead(
    event: Event, purchases: int, recent_visits: tuple[datetime, ...], rules: LifecycleRules
) -> bool:
    """Does this event (with the facts after it) make the customer a lead?"""
    acq = rules.acquisition
    if type(event) is Signup:
        return acq.signup
    if type(event) is Identify:
        return acq.identify_with_email and _has_email(event)
    if type(event) is SiteVisit:
        return _within(recent_visits, event.occurred_at, acq.visits_within_days) >= acq.visits
    if type(event) is SupportTicket:
        return acq.pre_purchase_ticket and purchases == 0
    return False


def _target(event: Event, v: list[Any], lead: bool, rules: LifecycleRules) -> tuple[Stage, str]:
    """The least arc stage this event puts a customer in, and why (``v``: the facts after
    it; ``lead``: whether it makes the customer a lead)."""
    loyal = rules.loyalty
    purchases: int = v[_PURCHASES]
    if type(event) is Purchase:
        recent = _within(v[_RECENT_PURCHASES], event.occurred_at, loyal.purchases_within_days)
        if recent >= loyal.purchases:
            return Stage.LOYALTY, "frequent purchases"
        if purchases >= rules.retention.purchases:
            return Stage.RETENTION, "repeat purchase"
        return Stage.CONVERSION, "first purchase"
    if purchases >= 1:  # converted: the loyalty signals count
        if (
            type(event) is Review
            and loyal.review_min_rating is not None
            and event.properties.rating >= loyal.review_min_rating
        ):
            return Stage.LOYALTY, "good review"
        if (
            type(event) is NpsResponse
            and loyal.nps_min_score is not None
            and event.properties.score >= loyal.nps_min_score
        ):
            return Stage.LOYALTY, "nps promoter"
        if type(event) is Referral and loyal.referral:
            return Stage.LOYALTY, "referral"
    if lead:
        return Stage.ACQUISITION, f"lead: {event.type}"
    return Stage.REACH, event.type


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


def apply_event(state: CustomerState | None, event: Event, rules: LifecycleRules) -> Applied:
    """Fold one event into a customer's state (pure): advance to its time, then its rules.

    Apply events in :func:`event_order`; a late event needs :func:`rebuild` instead.
    """
    key = customer_key(event)
    if key is None:
        raise ValueError(f"{event.type} events carry no customer")
    at = event.occurred_at
    moves: list[Transition] = []
    if state is None:
        fresh = True
        state = _new_state(key, event)
    else:
        fresh = False
        state, moves = advance(state, at, rules)
    # One new state per event: its values start as the state's and the event writes its
    # changes into them (a list, not the frozen state: the state given is never changed).
    v: list[Any] = list(_state_values(state))
    lead = _facts(state, event, rules, v)
    target, reason = _target(event, v, lead, rules)
    purchases: int = v[_PURCHASES]
    current = state.stage
    new_stage = current
    reactivation = False
    is_purchase = type(event) is Purchase
    if fresh:
        new_stage = target
    elif is_purchase and current in LAPSED:
        new_stage, reason, reactivation = Stage.RETENTION, "reactivation", True
        v[_REACTIVATIONS] = state.reactivations + 1
    elif type(event) is SubscriptionCancelled and rules.churned.subscription_cancelled:
        if current in CUSTOMER_STAGES or current is Stage.AT_RISK:
            new_stage, reason = Stage.CHURNED, "subscription cancelled"
    elif (
        type(event) is Refund
        and rules.refund.full_refund_of_only_order_to_acquisition
        and current in CUSTOMER_STAGES
        and purchases == 1
        and v[_REFUNDED] >= v[_REVENUE]
    ):
        new_stage, reason = Stage.ACQUISITION, "full refund of the only order"
    elif current not in LAPSED and _RANK[target] > _RANK[current]:
        new_stage = target
    if fresh or new_stage != current:
        v[_STAGE] = new_stage
        v[_STAGE_ENTERED_AT] = at
        moves.append(
            _transition(
                state.customer_id, None if fresh else current, new_stage, at, event.event_id, reason
            )
        )
    return _applied(
        make_state(*v),
        tuple(moves),
        is_purchase and purchases == 1,
        is_purchase and purchases >= 2,
        reactivation,
    )


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
    key: str, events: Sequence[Event], rules: LifecycleRules, until: datetime | None = None
) -> CustomerState | None:
    """A customer's state from its whole event set (any order), advanced to ``until``."""
    state: CustomerState | None = None
    for event in sorted(events, key=event_order):
        state = apply_event(state, event, rules).state
    if state is not None:
        state = replace(state, customer_id=key)
        if until is not None:
            state, _ = advance(state, until, rules)
    return state
