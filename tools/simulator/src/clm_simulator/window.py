"""One KPI window's view of the replayed steps: the selections every KPI family counts from.

A :class:`Window` is ``[start, end)`` at minute resolution (as the metrics service buckets),
optionally narrowed to one source and one first-touch channel, in one reporting currency. Its
selections are computed once, on first use, and shared by the KPI families of :mod:`.truth`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

from clm_domain.events import Event, MarketingSpend
from clm_domain.lifecycle import CustomerState, Stage, Transition
from clm_simulator.replay import Step, Sweep, stages_at, who

#: Customers counted as active (churn and retention rates), as the metrics service does.
ACTIVE_STAGES = ("conversion", "retention", "loyalty", "at_risk")
ZERO = Decimal(0)
CENT = Decimal("0.01")
RATE = Decimal("0.0001")


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


def count_by(items: Iterable[Step], key: Callable[[Step], str]) -> dict[str, int]:
    """How many of ``items`` fall under each key (in first-seen order)."""
    out: dict[str, int] = {}
    for s in items:
        k = key(s)
        out[k] = out.get(k, 0) + 1
    return out


def first_channel(step: Step) -> str:
    """The first-touch channel of the step's customer ("" when unknown)."""
    assert step.applied is not None
    return step.applied.state.first_channel or ""


def amount_of(steps: Iterable[Step]) -> Decimal:
    """The sum of the steps' ``amount`` properties."""
    return sum((props(s).amount for s in steps), ZERO)


@dataclass(frozen=True)
class Window:
    """``[start, end)`` of the steps (and the sweeper's moves ``swept``), narrowed to
    ``source`` and first-touch ``channel`` when given, with money in ``currency``."""

    steps: list[Step]
    start: datetime
    end: datetime
    currency: str
    source: str | None
    channel: str | None
    swept: list[Sweep] | tuple[()]

    # ------------------------------------------------------------------ filters
    def contains(self, at: datetime) -> bool:
        return in_window(at, self.start, self.end)

    def event_matches(self, event: Event) -> bool:
        """The event's own source and channel are the ones asked for."""
        return (self.source is None or event.source == self.source) and (
            self.channel is None or (event.channel or "") == self.channel
        )

    def customer_matches(self, state: CustomerState) -> bool:
        """The customer's first-touch source and channel are the ones asked for."""
        return (self.source is None or state.first_source == self.source) and (
            self.channel is None or (state.first_channel or "") == self.channel
        )

    def in_currency(self, steps: Iterable[Step]) -> list[Step]:
        return [s for s in steps if props(s).currency == self.currency]

    # ------------------------------------------------------------------ events in the window
    @cached_property
    def events(self) -> list[Step]:
        """The window's events (by event time and the event's own source and channel)."""
        return [s for s in self.steps if self.contains(s.at) and self.event_matches(s.event)]

    @cached_property
    def by_type(self) -> dict[str, list[Step]]:
        out: dict[str, list[Step]] = {}
        for s in self.events:
            out.setdefault(s.event.type, []).append(s)
        return out

    def of_type(self, type_: str) -> list[Step]:
        return self.by_type.get(type_, [])

    @cached_property
    def purchases(self) -> list[Step]:
        return self.of_type("purchase")

    @cached_property
    def visitors(self) -> set[str | None]:
        return {who(s) for s in self.of_type("site_visit")}

    @cached_property
    def purchasers(self) -> set[str | None]:
        return {who(s) for s in self.purchases}

    @cached_property
    def spend(self) -> list[Step]:
        """Spend reports in the reporting currency whose period starts in the window."""
        return self.in_currency(
            s
            for s in self.steps
            if isinstance(s.event, MarketingSpend)
            and self.contains(props(s).period_start)
            and (self.source is None or s.event.source == self.source)
            and (self.channel is None or props(s).channel == self.channel)
        )

    # ------------------------------------------------------------------ customers' steps
    @cached_property
    def customer_steps(self) -> list[Step]:
        """Every step of the customers asked for (by first touch), at any time."""
        return [
            s
            for s in self.steps
            if s.applied is not None and self.customer_matches(s.applied.state)
        ]

    def customer_steps_where(self, flag: Callable[[Step], bool]) -> list[Step]:
        """The customers' steps in the window for which ``flag`` holds."""
        return [s for s in self.customer_steps if flag(s) and self.contains(s.at)]

    @cached_property
    def moves(self) -> list[tuple[Step, Transition]]:
        """Every move in the window at its own time (one event may cause several)."""
        return [
            (s, t)
            for s in self.customer_steps
            if s.applied is not None
            for t in s.applied.transitions
            if self.contains(t.at)
        ]

    @cached_property
    def leads(self) -> list[Step]:
        return [
            s
            for s, t in self.moves
            if t.to_stage == Stage.ACQUISITION and t.from_stage in (None, Stage.REACH)
        ]

    @cached_property
    def new_customers(self) -> list[Step]:
        return self.customer_steps_where(lambda s: bool(s.applied and s.applied.first_purchase))

    @cached_property
    def spend_by_channel(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for s in self.spend:
            ch = props(s).channel
            out[ch] = out.get(ch, ZERO) + props(s).amount
        return out

    @cached_property
    def new_customers_by_channel(self) -> dict[str, int]:
        return count_by(self.new_customers, first_channel)

    def channel_cac(self, channel: str) -> Decimal | None:
        """Spend on ``channel`` per new customer whose first touch it was (None: none)."""
        customers = self.new_customers_by_channel.get(channel)
        return self.spend_by_channel.get(channel, ZERO) / customers if customers else None

    # ------------------------------------------------------------------ stages
    @cached_property
    def stages_at_start(self) -> dict[str, int]:
        return stages_at(self.steps, self.start, self.source, self.channel, self.swept)

    @cached_property
    def stages_at_end(self) -> dict[str, int]:
        return stages_at(self.steps, self.end, self.source, self.channel, self.swept)

    @cached_property
    def active_at_start(self) -> int:
        return sum(self.stages_at_start[s] for s in ACTIVE_STAGES)

    @cached_property
    def active_at_end(self) -> int:
        return sum(self.stages_at_end[s] for s in ACTIVE_STAGES)

    # ------------------------------------------------------------ figures several families use
    @cached_property
    def revenue(self) -> Decimal:
        return amount_of(self.in_currency(self.purchases))

    @cached_property
    def average_order_value(self) -> Decimal | None:
        paid = self.in_currency(self.purchases)
        return None if not paid else self.revenue / len(paid)

    @cached_property
    def purchase_frequency(self) -> Decimal | None:
        if not self.purchasers:
            return None
        return Decimal(len(self.purchases)) / len(self.purchasers)

    @cached_property
    def churned(self) -> int:
        """Moves to churned in the window: on an event, or by the sweeper."""
        on_events = [t for _, t in self.moves if t.to_stage == Stage.CHURNED]
        swept = [
            t
            for w in self.swept
            if self.customer_matches(w.after)
            for t in w.moves
            if t.to_stage == Stage.CHURNED and self.contains(t.at)
        ]
        return len(on_events) + len(swept)

    @cached_property
    def churn(self) -> Decimal | None:
        """Churned per customer active at the start (None: none was)."""
        return None if self.active_at_start == 0 else Decimal(self.churned) / self.active_at_start
