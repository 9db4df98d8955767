"""What the stage reducer keeps and gives: a customer's state, its stage moves, and what
applying one event gave (all frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from clm_domain.events import Event, MarketingSpend
from clm_domain.stages import Stage

T = TypeVar("T")

#: A customer's ``purchase_currency`` once its purchases came in more than one currency.
MIXED_CURRENCY = "*"


def event_order(event: Event) -> tuple[datetime, str, str]:
    """The total order events are applied in: event time, then source and id (ties)."""
    return (event.occurred_at, event.source, event.event_id)


def customer_key(event: Event) -> str | None:
    """The id a customer's state is kept under (None: the event has no customer)."""
    if isinstance(event, MarketingSpend):
        return None
    return event.customer_id or event.anonymous_id


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
    # the purchase-day facts (one transaction per UTC calendar day, the day's sum its value):
    # distinct days with a purchase, the sum of the purchases on days after the first one,
    # and the purchases' currency (MIXED_CURRENCY when more than one)
    purchase_days: int = 0
    repeat_spend: Decimal = Decimal(0)
    purchase_currency: str | None = None
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
