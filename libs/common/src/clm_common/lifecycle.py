"""The lifecycle model: stages and the pure stage reducer.

``apply_event(state, event)`` folds one touchpoint into a customer's state and says which stage
move (if any) it caused. No I/O, no clock: time comes from the event. This first version holds
the rules of the walking skeleton; the configurable rule file grows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from clm_common.events import (
    Event,
    Identify,
    MarketingSpend,
    NpsResponse,
    Purchase,
    Referral,
    Refund,
    Review,
    Signup,
    SupportTicket,
)


class Stage(StrEnum):
    """Lifecycle stages: the five-step arc plus the two ways out of it."""

    REACH = "reach"
    ACQUISITION = "acquisition"
    CONVERSION = "conversion"
    RETENTION = "retention"
    LOYALTY = "loyalty"
    AT_RISK = "at_risk"
    CHURNED = "churned"


#: Other names in common use for the arc, accepted wherever a stage is named.
STAGE_ALIASES: dict[str, Stage] = {
    "awareness": Stage.REACH,
    "consideration": Stage.ACQUISITION,
    "purchase": Stage.CONVERSION,
    "advocacy": Stage.LOYALTY,
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


def parse_stage(name: str) -> Stage:
    """A stage from its name or alias (``awareness`` → ``reach``); ValueError if unknown."""
    key = name.strip().lower()
    if key in STAGE_ALIASES:
        return STAGE_ALIASES[key]
    return Stage(key)


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
    events: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False)


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
    """What applying an event gave: the new state and the move it caused, if any."""

    state: CustomerState
    transition: Transition | None
    first_purchase: bool = False
    repeat_purchase: bool = False
    reactivation: bool = False


def customer_key(event: Event) -> str | None:
    """The id a customer's state is kept under (None: the event has no customer)."""
    if isinstance(event, MarketingSpend):
        return None
    return event.customer_id or event.anonymous_id


def _min_stage(event: Event, purchases_after: int) -> tuple[Stage, str]:
    """The least stage this event puts a customer in, and why."""
    if isinstance(event, Purchase):
        if purchases_after >= 2:
            return Stage.RETENTION, "repeat purchase"
        return Stage.CONVERSION, "first purchase"
    if isinstance(event, Signup | Identify):
        return Stage.ACQUISITION, event.type
    return Stage.REACH, event.type


def _facts(state: CustomerState, event: Event) -> CustomerState:
    """Running facts after the event (everything but the stage)."""
    at = event.occurred_at
    earlier = at < state.first_seen_at
    s = replace(
        state,
        first_seen_at=min(state.first_seen_at, at),
        last_seen_at=max(state.last_seen_at, at),
        first_source=event.source if earlier else state.first_source,
        first_channel=event.channel if earlier and event.channel else state.first_channel,
        events=state.events + 1,
    )
    if isinstance(event, Purchase):
        s = replace(
            s,
            purchases=s.purchases + 1,
            revenue=s.revenue + event.properties.amount,
            last_purchase_at=max(s.last_purchase_at or at, at),
            converted_at=min(s.converted_at or at, at),
        )
    elif isinstance(event, Refund):
        s = replace(s, refunds=s.refunds + 1, refunded=s.refunded + event.properties.amount)
    elif isinstance(event, SupportTicket):
        if event.properties.status == "opened":
            s = replace(s, tickets_opened=s.tickets_opened + 1)
        else:
            s = replace(s, tickets_solved=s.tickets_solved + 1)
    elif isinstance(event, Review):
        s = replace(s, reviews=s.reviews + 1, review_sum=s.review_sum + event.properties.rating)
    elif isinstance(event, NpsResponse):
        s = replace(s, last_nps=event.properties.score)
    elif isinstance(event, Referral):
        s = replace(s, referrals=s.referrals + 1)
    if isinstance(event, Signup | Identify):
        s = replace(s, acquired_at=min(s.acquired_at or at, at))
    return s


def apply_event(state: CustomerState | None, event: Event) -> Applied:
    """Fold one event into a customer's state (pure).

    Rules of this version: an unknown customer starts in ``reach``; a signup or identify makes it
    at least ``acquisition``; a first purchase at least ``conversion``; a second purchase at
    least ``retention``; a purchase from ``at_risk`` or ``churned`` is a reactivation into
    ``retention``. Stages never move backwards here.
    """
    key = customer_key(event)
    if key is None:
        raise ValueError(f"{event.type} events carry no customer")
    at = event.occurred_at
    before: CustomerState | None = state
    if state is None:
        state = CustomerState(
            customer_id=key,
            stage=Stage.REACH,
            stage_entered_at=at,
            first_seen_at=at,
            last_seen_at=at,
            first_source=event.source,
            first_channel=event.channel,
        )
    after = _facts(state, event)
    target, reason = _min_stage(event, after.purchases)
    current = state.stage
    reactivation = False
    if before is not None and current in LAPSED:
        if isinstance(event, Purchase):
            new_stage, reason, reactivation = Stage.RETENTION, "reactivation", True
        else:
            new_stage = current
    elif before is None or _RANK[target] > _RANK[current]:
        new_stage = target
    else:
        new_stage = current
    transition = None
    if before is None or new_stage != current:
        after = replace(after, stage=new_stage, stage_entered_at=at)
        transition = Transition(
            customer_id=key,
            from_stage=None if before is None else current,
            to_stage=new_stage,
            at=at,
            event_id=event.event_id,
            reason=reason,
        )
    is_purchase = isinstance(event, Purchase)
    return Applied(
        state=after,
        transition=transition,
        first_purchase=is_purchase and after.purchases == 1,
        repeat_purchase=is_purchase and after.purchases >= 2,
        reactivation=reactivation,
    )
