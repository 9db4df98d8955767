"""The stage reducer: each rule of the default rule file, and the invariants users rely on."""

from __future__ import annotations

import random
from dataclasses import FrozenInstanceError, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_domain.events import Event, parse_event
from clm_domain.lifecycle import (
    ARC,
    CAN_LAPSE,
    LAPSED,
    CustomerState,
    Stage,
    Transition,
    advance,
    apply_event,
    event_order,
    parse_stage,
    rebuild,
)
from clm_domain.rules import LifecycleRules, load_rules
from clm_infra.schema import LAPSING_STAGES
from tests.factories import NOW, event_doc

T0 = datetime(2025, 1, 1, tzinfo=UTC)
RULES = load_rules()


def ev(type_: str, day: float = 0, **kw: Any) -> Event:
    at = (T0 + timedelta(days=day)).isoformat()
    kw.setdefault("event_id", f"{type_}-{day}-{random.random()}")
    return parse_event(event_doc(type_, occurred_at=at, **kw), now=NOW)


def run(
    events: list[Event], rules: LifecycleRules = RULES
) -> tuple[CustomerState, list[Transition]]:
    state = None
    moves: list[Transition] = []
    for e in events:
        applied = apply_event(state, e, rules)
        state = applied.state
        moves.extend(applied.transitions)
    assert state is not None
    return state, moves


def stages(moves: list[Transition]) -> list[Stage]:
    return [m.to_stage for m in moves]


def test_the_shipped_rule_file_is_the_documented_defaults() -> None:
    assert LifecycleRules() == RULES


@pytest.mark.parametrize("first", ["ad_click", "site_visit", "email_engagement"])
def test_an_unknown_customer_seen_at_the_top_of_the_funnel_is_in_reach(first: str) -> None:
    applied = apply_event(None, ev(first), RULES)
    assert applied.state.stage is Stage.REACH
    (move,) = applied.transitions
    assert move.from_stage is None


def test_signup_makes_acquisition_and_purchase_conversion() -> None:
    state, moves = run([ev("site_visit"), ev("signup", 1), ev("purchase", 2)])
    assert stages(moves) == [Stage.REACH, Stage.ACQUISITION, Stage.CONVERSION]
    assert state.purchases == 1
    assert state.revenue == Decimal("59.90")
    assert state.acquired_at == T0 + timedelta(days=1)
    assert state.converted_at == T0 + timedelta(days=2)


def test_identify_with_an_email_is_a_lead_but_without_one_is_not() -> None:
    _, with_email = run([ev("site_visit"), ev("identify", 1, traits={"email": "a@b.c"})])
    _, without = run([ev("site_visit"), ev("identify", 1, traits={"plan": "x"})])
    assert stages(with_email)[-1] is Stage.ACQUISITION
    assert stages(without) == [Stage.REACH]


def test_three_visits_within_thirty_days_make_a_lead() -> None:
    _, close = run([ev("site_visit", 0), ev("site_visit", 10), ev("site_visit", 29)])
    _, spread = run([ev("site_visit", 0), ev("site_visit", 20), ev("site_visit", 40)])
    assert stages(close) == [Stage.REACH, Stage.ACQUISITION]
    assert stages(spread) == [Stage.REACH]


def test_a_ticket_before_any_purchase_is_a_lead() -> None:
    _, moves = run([ev("site_visit"), ev("support_ticket", 1, status="opened")])
    assert stages(moves)[-1] is Stage.ACQUISITION


def test_second_purchase_is_retention_and_third_within_a_year_loyalty() -> None:
    _, moves = run([ev("purchase", 0), ev("purchase", 30), ev("purchase", 80)])
    assert stages(moves) == [Stage.CONVERSION, Stage.RETENTION, Stage.LOYALTY]
    visits = [ev("site_visit", d) for d in range(50, 400, 50)]
    _, slow = run([ev("purchase", 0), ev("purchase", 30), *visits, ev("purchase", 400)])
    assert stages(slow)[-1] is Stage.RETENTION


@pytest.mark.parametrize(
    ("type_", "props", "loyal"),
    [
        ("review", {"rating": 4}, True),
        ("review", {"rating": 3}, False),
        ("nps_response", {"score": 9}, True),
        ("nps_response", {"score": 8}, False),
        ("referral", {}, True),
    ],
)
def test_loyalty_signals_after_conversion(type_: str, props: dict[str, Any], loyal: bool) -> None:
    state, _ = run([ev("purchase"), ev(type_, 1, **props)])
    assert (state.stage is Stage.LOYALTY) is loyal


def test_loyalty_signals_before_any_purchase_do_not_skip_the_funnel() -> None:
    state, _ = run([ev("site_visit"), ev("review", 1, rating=5)])
    assert state.stage is Stage.REACH


def test_inactivity_makes_at_risk_then_churned_at_the_right_times() -> None:
    state, _ = run([ev("purchase", 0)])
    at_risk, moves = advance(state, T0 + timedelta(days=100), RULES)
    assert at_risk.stage is Stage.AT_RISK
    assert [(m.to_stage, m.at) for m in moves] == [(Stage.AT_RISK, T0 + timedelta(days=60))]
    churned, moves = advance(state, T0 + timedelta(days=200), RULES)
    assert churned.stage is Stage.CHURNED
    assert [m.to_stage for m in moves] == [Stage.AT_RISK, Stage.CHURNED]
    assert moves[-1].at == T0 + timedelta(days=180)
    assert advance(churned, T0 + timedelta(days=500), RULES) == (churned, [])


def test_leads_never_go_at_risk() -> None:
    state, _ = run([ev("signup")])
    assert advance(state, T0 + timedelta(days=999), RULES)[0].stage is Stage.ACQUISITION


def test_a_purchase_after_a_long_silence_is_a_reactivation() -> None:
    state, moves = run([ev("purchase", 0), ev("purchase", 100, order_id="o-2")])
    assert stages(moves) == [Stage.CONVERSION, Stage.AT_RISK, Stage.RETENTION]
    assert moves[-1].reason == "reactivation"
    assert state.reactivations == 1


def test_a_cancellation_churns_at_once() -> None:
    state, moves = run([ev("purchase"), ev("subscription_cancelled", 1)])
    assert state.stage is Stage.CHURNED
    assert moves[-1].reason == "subscription cancelled"


def test_a_full_refund_of_the_only_order_goes_back_to_acquisition() -> None:
    state, moves = run([ev("purchase"), ev("refund", 1)])
    assert state.stage is Stage.ACQUISITION
    partial, _ = run([ev("purchase"), ev("refund", 1, amount="10.00")])
    assert partial.stage is Stage.CONVERSION
    two_orders, _ = run([ev("purchase"), ev("purchase", 1, order_id="o-2"), ev("refund", 2)])
    assert two_orders.stage is Stage.RETENTION
    assert moves[-1].reason == "full refund of the only order"


def test_rules_are_settings() -> None:
    eager = LifecycleRules.model_validate(
        {"retention": {"purchases": 3}, "loyalty": {"purchases": 4}}
    )
    _, moves = run([ev("purchase", 0), ev("purchase", 1)], eager)
    assert stages(moves) == [Stage.CONVERSION]


def test_first_touch_is_the_earliest_event_even_when_it_arrives_late() -> None:
    late_first = ev("ad_click", 0, channel="paid_search")
    state = rebuild("cust-1", [ev("site_visit", 10, channel="email"), late_first], RULES)
    assert state is not None
    assert state.first_channel == "paid_search"
    assert state.first_seen_at == T0


def test_stage_aliases() -> None:
    assert parse_stage("Awareness") is Stage.REACH
    assert parse_stage("advocacy") is Stage.LOYALTY
    assert parse_stage("consideration") is Stage.ACQUISITION
    with pytest.raises(ValueError, match="bogus"):
        parse_stage("bogus")


def test_marketing_spend_has_no_customer_state() -> None:
    with pytest.raises(ValueError, match="no customer"):
        apply_event(None, ev("marketing_spend", customer_id=None), RULES)


STEP_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("site_visit", {}),
    ("ad_click", {}),
    ("signup", {}),
    ("identify", {"traits": {"email": "x@y.z"}}),
    ("purchase", {}),
    ("purchase", {"amount": "5.00"}),
    ("refund", {}),
    ("review", {"rating": 5}),
    ("review", {"rating": 2}),
    ("nps_response", {"score": 10}),
    ("referral", {}),
    ("support_ticket", {"status": "opened"}),
    ("subscription_cancelled", {}),
    ("email_engagement", {}),
]
steps = st.lists(
    st.tuples(st.sampled_from(range(len(STEP_TYPES))), st.integers(0, 400)),
    min_size=1,
    max_size=25,
)


def events_of(picks: list[tuple[int, int]]) -> list[Event]:
    out = []
    for n, (i, day) in enumerate(picks):
        type_, props = STEP_TYPES[i]
        out.append(ev(type_, day, event_id=f"e{n:03d}", **props))
    return out


def defined(move: Transition) -> bool:
    """Forward on the arc, or one of the defined backward moves."""
    if move.from_stage is None:
        return True
    if move.to_stage in LAPSED:
        return True
    if move.from_stage in LAPSED:
        return move.to_stage is Stage.RETENTION and move.reason == "reactivation"
    if ARC.index(move.to_stage) > ARC.index(move.from_stage):
        return True
    return move.to_stage is Stage.ACQUISITION and move.reason == "full refund of the only order"


@settings(max_examples=300)
@given(steps, st.randoms(use_true_random=False))
def test_the_state_depends_on_the_set_of_events_not_their_order(
    picks: list[tuple[int, int]], rnd: random.Random
) -> None:
    events = events_of(picks)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    until = T0 + timedelta(days=900)
    assert rebuild("c", shuffled, RULES, until) == rebuild("c", events, RULES, until)


@settings(max_examples=300)
@given(steps)
def test_only_the_defined_moves_go_backwards(picks: list[tuple[int, int]]) -> None:
    events = sorted(events_of(picks), key=event_order)
    state, moves = run(events)
    assert all(defined(m) for m in moves), moves
    assert state.events == len(events)
    assert state.purchases == sum(1 for e in events if e.type == "purchase")
    _, later = advance(state, T0 + timedelta(days=2000), RULES)
    assert all(defined(m) for m in later)


@given(steps, st.integers(0, 3000))
def test_advancing_is_idempotent(picks: list[tuple[int, int]], days: int) -> None:
    state, _ = run(sorted(events_of(picks), key=event_order))
    until = T0 + timedelta(days=days)
    once, _ = advance(state, until, RULES)
    assert advance(once, until, RULES) == (once, [])


def test_states_compare_equal_only_with_equal_facts() -> None:
    state, _ = run([ev("purchase")])
    assert replace(state, purchases=2) != state


@given(steps)
def test_applying_an_event_leaves_the_given_state_as_it_was(picks: list[tuple[int, int]]) -> None:
    events = sorted(events_of(picks), key=event_order)
    state, _ = run(events[:-1]) if len(events) > 1 else (None, [])
    copy = None if state is None else replace(state)
    applied = apply_event(state, events[-1], RULES)
    assert state == copy
    with pytest.raises(FrozenInstanceError):
        applied.state.purchases = 99  # type: ignore[misc]


def test_a_state_made_from_its_values_in_field_order_is_the_same_frozen_state() -> None:
    """What a stored row's columns give back (``repository.rows.state_from_values``)."""
    state, _ = run([ev("site_visit"), ev("purchase", 1), ev("review", 2, rating=5)])
    values = [getattr(state, f.name) for f in fields(CustomerState)]
    made = CustomerState(*values)
    assert type(made) is CustomerState
    assert made == state
    assert hash(made) == hash(state)
    with pytest.raises(FrozenInstanceError):
        made.stage = Stage.REACH  # type: ignore[misc]


def test_the_sweepers_index_holds_the_stages_inactivity_moves_on_from() -> None:
    assert set(LAPSING_STAGES) == {s.value for s in CAN_LAPSE}
