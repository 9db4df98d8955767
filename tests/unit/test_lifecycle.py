"""The stage reducer of the walking skeleton: its rules and its invariants."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clm_common.events import Event, parse_event
from clm_common.lifecycle import (
    ARC,
    CustomerState,
    Stage,
    apply_event,
    parse_stage,
)
from tests.factories import NOW, event_doc

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def ev(type_: str, minute: int = 0, **kw: object) -> Event:
    at = (T0 + timedelta(minutes=minute)).isoformat()
    return parse_event(event_doc(type_, occurred_at=at, **kw), now=NOW)  # type: ignore[arg-type]


def run(events: list[Event]) -> tuple[CustomerState, list[Stage]]:
    state = None
    stages = []
    for e in events:
        applied = apply_event(state, e)
        state = applied.state
        if applied.transition:
            stages.append(applied.transition.to_stage)
    assert state is not None
    return state, stages


@pytest.mark.parametrize("first", ["ad_click", "site_visit", "email_engagement"])
def test_an_unknown_customer_seen_at_the_top_of_the_funnel_is_in_reach(first: str) -> None:
    applied = apply_event(None, ev(first))
    assert applied.state.stage is Stage.REACH
    assert applied.transition is not None
    assert applied.transition.from_stage is None


def test_signup_makes_acquisition_and_purchase_conversion() -> None:
    state, stages = run([ev("site_visit"), ev("signup", 1), ev("purchase", 2)])
    assert stages == [Stage.REACH, Stage.ACQUISITION, Stage.CONVERSION]
    assert state.stage is Stage.CONVERSION
    assert state.purchases == 1
    assert state.revenue == Decimal("59.90")
    assert state.stage_entered_at == T0 + timedelta(minutes=2)


def test_a_purchase_from_nowhere_is_conversion_at_once() -> None:
    applied = apply_event(None, ev("purchase"))
    assert applied.state.stage is Stage.CONVERSION
    assert applied.first_purchase
    assert not applied.repeat_purchase


def test_second_purchase_is_retention() -> None:
    state, stages = run([ev("purchase"), ev("purchase", 1, order_id="o-2")])
    assert stages == [Stage.CONVERSION, Stage.RETENTION]
    assert state.purchases == 2


def test_a_signup_after_a_purchase_does_not_move_the_customer_back() -> None:
    state, stages = run([ev("purchase"), ev("signup", 1)])
    assert state.stage is Stage.CONVERSION
    assert stages == [Stage.CONVERSION]


def test_a_purchase_from_a_lapsed_stage_is_a_reactivation() -> None:
    state, _ = run([ev("purchase")])
    churned = replace(state, stage=Stage.CHURNED)
    applied = apply_event(churned, ev("purchase", 5, order_id="o-2"))
    assert applied.state.stage is Stage.RETENTION
    assert applied.reactivation
    assert applied.transition is not None
    assert applied.transition.reason == "reactivation"


def test_first_touch_is_the_earliest_event_even_when_it_arrives_late() -> None:
    late_first = ev("ad_click", 0, channel="paid_search")
    state, _ = run([ev("site_visit", 10, channel="email"), late_first])
    assert state.first_channel == "paid_search"
    assert state.first_seen_at == T0
    assert state.last_seen_at == T0 + timedelta(minutes=10)


def test_stage_aliases() -> None:
    assert parse_stage("Awareness") is Stage.REACH
    assert parse_stage("advocacy") is Stage.LOYALTY
    assert parse_stage("retention") is Stage.RETENTION
    with pytest.raises(ValueError, match="bogus"):
        parse_stage("bogus")


def test_marketing_spend_has_no_customer_state() -> None:
    with pytest.raises(ValueError, match="no customer"):
        apply_event(None, ev("marketing_spend", customer_id=None))


TYPES = ["ad_click", "site_visit", "signup", "identify", "purchase", "refund", "review"]


@given(st.lists(st.tuples(st.sampled_from(TYPES), st.integers(0, 10_000)), min_size=1, max_size=30))
def test_the_arc_never_moves_backwards_and_counts_are_exact(
    steps: list[tuple[str, int]],
) -> None:
    events = [ev(t, m, event_id=f"e{i}") for i, (t, m) in enumerate(steps)]
    state = None
    ranks = []
    for e in events:
        state = apply_event(state, e).state
        ranks.append(ARC.index(state.stage))
    assert state is not None
    assert ranks == sorted(ranks)
    assert state.purchases == sum(1 for t, _ in steps if t == "purchase")
    assert state.events == len(steps)
    assert state.first_seen_at == T0 + timedelta(minutes=min(m for _, m in steps))
    assert state.last_seen_at == T0 + timedelta(minutes=max(m for _, m in steps))


@given(st.permutations(["site_visit", "signup", "purchase", "purchase", "review"]))
def test_final_stage_and_facts_do_not_depend_on_arrival_order(order: list[str]) -> None:
    events = [ev(t, i, event_id=f"{t}{i}") for i, t in enumerate(order)]
    state, _ = run(events)
    assert state.stage is Stage.RETENTION
    assert state.purchases == 2
    assert state.reviews == 1
