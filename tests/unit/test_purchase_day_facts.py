"""The purchase-day facts the predictive models read (one transaction per UTC calendar day):
``purchase_days``, ``repeat_spend`` and ``purchase_currency`` equal a brute-force count of the
purchases, whatever order they arrived in."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clm_domain.events import Event, Purchase, parse_event
from clm_domain.lifecycle import (
    MIXED_CURRENCY,
    CustomerState,
    apply_event,
    event_order,
    is_late,
    rebuild,
)
from clm_domain.rules import load_rules
from clm_stage_engine.repository.rows import (
    STATE_COLUMNS,
    customer_row,
    row_from_state,
    state_from_row,
)
from tests.factories import NOW, event_doc

RULES = load_rules()
MIDNIGHT = datetime(2025, 3, 1, tzinfo=UTC)
OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]


@dataclass(frozen=True)
class Pick:
    """One generated event: a purchase (or a visit, which must not count)."""

    day: int
    second: int
    amount: Decimal
    currency: str
    offset: int
    purchase: bool = True


#: Seconds around midnight UTC, where a day is easiest to get wrong, and any other.
seconds = st.one_of(st.sampled_from([0, 1, 59, 3600, 86340, 86399]), st.integers(0, 86399))
picks = st.builds(
    Pick,
    day=st.integers(0, 4),
    second=seconds,
    amount=st.decimals(min_value=0, max_value=Decimal("1e6"), places=4),
    currency=st.sampled_from(["EUR", "EUR", "EUR", "USD", "JPY"]),
    offset=st.integers(0, len(OFFSETS) - 1),
    purchase=st.booleans() | st.just(True),
)


def events_of(chosen: list[Pick]) -> list[Event]:
    out = []
    for n, p in enumerate(chosen):
        at = (MIDNIGHT + timedelta(days=p.day, seconds=p.second)).astimezone(OFFSETS[p.offset])
        props: dict[str, Any] = (
            {"amount": str(p.amount), "currency": p.currency, "order_id": f"o{n}"}
            if p.purchase
            else {}
        )
        doc = event_doc(
            "purchase" if p.purchase else "site_visit",
            event_id=f"e{n}",
            occurred_at=at.isoformat(),
            **props,
        )
        out.append(parse_event(doc, now=NOW))
    return out


def brute_force(events: list[Event]) -> tuple[int, Decimal, str | None]:
    """(purchase days, repeat spend, currency), from the purchases as a set."""
    bought = [e for e in events if isinstance(e, Purchase)]
    days: dict[date, list[Decimal]] = {}
    for e in bought:
        days.setdefault(e.occurred_at.astimezone(UTC).date(), []).append(e.properties.amount)
    if not days:
        return 0, Decimal(0), None
    first = min(days)
    repeat = sum((sum(a, Decimal(0)) for d, a in days.items() if d != first), Decimal(0))
    currencies = {e.properties.currency for e in bought}
    currency = currencies.pop() if len(currencies) == 1 else MIXED_CURRENCY
    return len(days), repeat, currency


def facts(state: CustomerState | None) -> tuple[int, Decimal, str | None]:
    assert state is not None
    return state.purchase_days, state.repeat_spend, state.purchase_currency


def as_engine_folds(arrivals: list[Event]) -> CustomerState | None:
    """Arrival order as the stage engine folds it: in order incrementally, a late event by a
    rebuild of everything seen."""
    state: CustomerState | None = None
    seen: list[Event] = []
    for event in arrivals:
        seen.append(event)
        if is_late(state, event):
            state = rebuild("cust-1", seen, RULES)
        else:
            state = apply_event(state, event, RULES).state
    return state


@settings(max_examples=400)
@given(st.lists(picks, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_the_facts_are_the_purchase_days_of_the_set_of_events(
    chosen: list[Pick], rnd: random.Random
) -> None:
    events = events_of(chosen)
    arrivals = list(events)
    rnd.shuffle(arrivals)
    expected = brute_force(events)
    assert facts(rebuild("cust-1", arrivals, RULES)) == expected
    assert facts(as_engine_folds(arrivals)) == expected
    in_order = as_engine_folds(sorted(events, key=event_order))
    assert facts(in_order) == expected
    assert in_order == rebuild("cust-1", events, RULES)


def test_purchases_on_one_utc_day_are_one_transaction() -> None:
    (a, b, c, d) = events_of(
        [
            Pick(0, 60, Decimal("10.00"), "EUR", 0),
            Pick(0, 86399, Decimal("5.50"), "EUR", 2),  # 15:59:59 at -08:00: same UTC day
            Pick(1, 0, Decimal("7.25"), "EUR", 1),  # 05:30 next day at +05:30: next UTC day
            Pick(1, 3600, Decimal("1.0001"), "EUR", 0),
        ]
    )
    state = as_engine_folds([a, b])
    assert facts(state) == (1, Decimal(0), "EUR")
    assert facts(as_engine_folds([a, b, c, d])) == (2, Decimal("8.2501"), "EUR")


def test_a_late_purchase_on_an_earlier_day_makes_the_first_day_a_repeat_day() -> None:
    first, later, late = events_of(
        [
            Pick(2, 100, Decimal("20"), "EUR", 0),
            Pick(3, 100, Decimal("30"), "EUR", 0),
            Pick(0, 100, Decimal("4"), "EUR", 0),
        ]
    )
    assert facts(as_engine_folds([first, later])) == (2, Decimal(30), "EUR")
    assert facts(as_engine_folds([first, later, late])) == (3, Decimal(50), "EUR")


def test_purchases_in_two_currencies_are_mixed_and_no_purchase_has_none() -> None:
    visit, eur, usd = events_of(
        [
            Pick(0, 1, Decimal(0), "EUR", 0, purchase=False),
            Pick(0, 2, Decimal("1"), "EUR", 0),
            Pick(1, 2, Decimal("2"), "USD", 0),
        ]
    )
    assert facts(as_engine_folds([visit])) == (0, Decimal(0), None)
    assert facts(as_engine_folds([visit, eur, usd])) == (2, Decimal(2), MIXED_CURRENCY)


def test_the_facts_go_into_a_row_and_come_back() -> None:
    """What the repository writes (``customer_row``: money as exact text) and reads."""
    state = as_engine_folds(
        events_of([Pick(0, 5, Decimal("1.5"), "EUR", 0), Pick(2, 5, Decimal("2.0001"), "USD", 0)])
    )
    assert state is not None
    row = customer_row(state)
    assert row[STATE_COLUMNS.index("purchase_days")] == 2
    assert row[STATE_COLUMNS.index("repeat_spend")] == "2.0001"
    assert row[STATE_COLUMNS.index("purchase_currency")] == MIXED_CURRENCY
    assert state_from_row(SimpleNamespace(**row_from_state(state))) == state
