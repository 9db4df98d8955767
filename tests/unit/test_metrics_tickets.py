"""Open support tickets counted per ticket: the ``tickets_open`` level, batch by batch, equals a
brute-force count of the tickets open at any instant, and is never below zero — with solves
before opens, solves of tickets never opened, duplicates, any arrival order and batching,
merges and erasures (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clm_metrics.buckets import BucketKey
from clm_metrics.formulas import WindowInputs, compute_kpis
from clm_metrics.members import Leaving
from clm_metrics.tickets import (
    TicketEvent,
    TicketKey,
    TicketState,
    advance,
    ticket_event,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CUSTOMERS = ("a", "b", "c")
TICKETS = ("t1", "t2", "t3")

Step = TicketEvent | Leaving


@dataclass
class Store:
    """What the metrics tables hold: ticket rows and the level buckets."""

    states: dict[TicketKey, TicketState]
    buckets: dict[BucketKey, Decimal]

    def run(self, batch: list[Step]) -> None:
        names = {s.key for s in batch if isinstance(s, TicketEvent)}
        who = {
            w
            for s in batch
            if isinstance(s, Leaving)
            for w in (s.who, s.into, s.pseudonym)
            if w is not None
        }
        known = {k: v for k, v in self.states.items() if k in names or k[0] in who}
        changes = advance(known, batch)
        for name, state in changes.states.items():
            if state is None:
                self.states.pop(name, None)
            else:
                self.states[name] = state
        for key, value in changes.increments:
            self.buckets[key] = self.buckets.get(key, Decimal(0)) + value

    def level(self, at: datetime) -> int:
        return int(sum((v for k, v in self.buckets.items() if k.bucket_start < at), Decimal(0)))


def truth(steps: list[Step], at: datetime) -> int:
    """Tickets open at ``at``: keys rewritten by the merges (and dropped by the erasures) that
    follow an event in arrival order; then per ticket, the earliest open and earliest solve."""
    seen: list[tuple[TicketKey, TicketEvent]] = []
    for step in steps:
        if isinstance(step, TicketEvent):
            seen.append((step.key, step))
            continue
        target = step.into if step.into is not None else step.pseudonym
        kept: list[tuple[TicketKey, TicketEvent]] = []
        for k, e in seen:
            if k[0] != step.who:
                kept.append((k, e))
            elif target is not None:
                kept.append(((target, k[1]), e))
        seen = kept
    opens: dict[TicketKey, datetime] = {}
    solves: dict[TicketKey, datetime] = {}
    for key, e in seen:
        into = opens if e.status == "opened" else solves
        into[key] = min(into.get(key, e.at), e.at)
    return sum(
        1
        for key, opened in opens.items()
        if opened < at and (key not in solves or solves[key] >= at)
    )


def ticket(who: str, tid: str, status: str, minutes: int, seconds: int) -> TicketEvent:
    at = T0 + timedelta(minutes=minutes, seconds=seconds)
    return TicketEvent((who, tid), status, at, "web", "email")


events = st.builds(
    ticket,
    st.sampled_from(CUSTOMERS),
    st.sampled_from(TICKETS),
    st.sampled_from(("opened", "solved")),
    st.integers(0, 30),
    st.integers(0, 59),
)
merges = st.builds(
    lambda who, into: Leaving(who, into=into),
    st.sampled_from(CUSTOMERS),
    st.sampled_from(CUSTOMERS),
).filter(lambda m: m.who != m.into)
erasures = st.builds(Leaving, st.sampled_from(CUSTOMERS))
anonymised = st.builds(
    lambda who: Leaving(who, pseudonym=f"anon-{who}"), st.sampled_from(CUSTOMERS)
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.one_of(events, events, events, merges, erasures, anonymised), min_size=1, max_size=25
    ),
    cuts=st.lists(st.integers(0, 25), max_size=6),
)
def test_the_open_level_is_exact_and_never_negative(steps: list[Step], cuts: list[int]) -> None:
    store = Store({}, {})
    bounds = sorted({0, len(steps), *(c for c in cuts if c < len(steps))})
    for a, b in pairwise(bounds):
        store.run(steps[a:b])
    for minute in range(0, 33):
        at = T0 + timedelta(minutes=minute)
        assert store.level(at) == truth(steps, at)
        assert store.level(at) >= 0


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(events, min_size=1, max_size=20), data=st.data())
def test_duplicates_and_arrival_order_change_nothing(
    steps: list[TicketEvent], data: st.DataObject
) -> None:
    once = Store({}, {})
    once.run(list(steps))
    shuffled = data.draw(st.permutations([*steps, *steps]))
    twice = Store({}, {})
    for step in shuffled:
        twice.run([step])
    assert {k: v for k, v in twice.buckets.items() if v} == {
        k: v for k, v in once.buckets.items() if v
    }


def test_solves_without_a_known_open_do_not_go_below_zero() -> None:
    store = Store({}, {})
    store.run([ticket("a", f"old{i}", "solved", 5, 0) for i in range(4)])
    assert store.level(T0 + timedelta(minutes=10)) == 0
    store.run([ticket("a", "t1", "opened", 6, 0), ticket("a", "t1", "opened", 7, 0)])
    assert store.level(T0 + timedelta(minutes=10)) == 1
    store.run([ticket("a", "t1", "solved", 8, 0), ticket("a", "t1", "solved", 9, 0)])
    assert store.level(T0 + timedelta(minutes=7)) == 1
    assert store.level(T0 + timedelta(minutes=10)) == 0


def test_a_solve_that_arrives_first_closes_the_late_open() -> None:
    store = Store({}, {})
    store.run([ticket("a", "t1", "solved", 9, 0)])
    store.run([ticket("a", "t1", "opened", 3, 0)])
    assert [store.level(T0 + timedelta(minutes=m)) for m in (3, 4, 9, 10)] == [0, 1, 1, 0]


def test_the_record_carries_the_ticket() -> None:
    record: dict[str, Any] = {
        "record_id": "r1",
        "customer": {"customer_id": "c1"},
        "event": {
            "type": "support_ticket",
            "occurred_at": T0.isoformat(),
            "source": "zendesk",
            "channel": None,
            "properties": {"ticket_id": "z-9", "status": "solved", "csat": 5},
        },
    }
    assert ticket_event(record) == TicketEvent(("c1", "z-9"), "solved", T0, "zendesk", "")
    assert ticket_event({**record, "event": {**record["event"], "type": "review"}}) is None


def test_the_kpi_reads_the_level_at_the_window_end() -> None:
    inputs = WindowInputs(
        totals={}, stages_at_start={}, stages_at_end={}, all_time={}, open_tickets_at_end=3
    )
    assert compute_kpis(inputs, reporting_currency="EUR")["open_support_tickets"] == 3
