"""The lifecycle's P(alive) rule (``at_risk.p_alive_below``): the crossing time's closed form
against the model library's P(alive), the reducer moving a customer exactly when its P(alive)
falls below the threshold (never before), the reason it records, and the rule being off by
default (and without a model)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from clm_domain.events import Event, parse_event
from clm_domain.lifecycle import CustomerState, Stage, Transition, advance, apply_event, rebuild
from clm_domain.p_alive import (
    AliveModel,
    crossing_age,
    crossing_day,
    lapse_reason,
    log_odds_inactive,
    p_alive,
    predicted_lapse,
)
from clm_domain.rules import LifecycleRules, RulesError, load_rules, parse_rules
from clm_predict import bgnbd
from tests.factories import NOW, event_doc

T0 = datetime(2025, 1, 1, 9, 30, tzinfo=UTC)
RULES = load_rules()
ON = LifecycleRules.model_validate({"at_risk": {"inactive_days": 60, "p_alive_below": 0.3}})
CDNOW = AliveModel(version=7, r=0.243, alpha=4.414, a=0.793, b=2.426)

positive = st.floats(-6.0, 6.0).map(math.exp)
thresholds = st.floats(0.01, 0.99)


@st.composite
def models(draw: st.DrawFn) -> AliveModel:
    return AliveModel(7, draw(positive), draw(positive), draw(positive), draw(positive))


def library_p_alive(model: AliveModel, x: int, t_x: float, age: float) -> float:
    params = bgnbd.BgNbdParams(model.r, model.alpha, model.a, model.b)
    return float(bgnbd.p_alive(params, x, t_x, age))


def ev(type_: str, day: float, n: int = 0, **kw: Any) -> Event:
    at = (T0 + timedelta(days=day)).isoformat()
    kw.setdefault("order_id", f"o-{day}-{n}")
    doc = event_doc(type_, occurred_at=at, event_id=f"{type_}-{day}-{n}", **kw)
    return parse_event(doc, now=NOW)


def fold(events: list[Event], rules: LifecycleRules = ON, model: AliveModel | None = CDNOW) -> Any:
    state: CustomerState | None = None
    moves: list[Transition] = []
    for e in events:
        applied = apply_event(state, e, rules, model)
        state = applied.state
        moves.extend(applied.transitions)
    assert state is not None
    return state, moves


# a frequent buyer: 10 purchase days, 3 days apart (x = 9, t_x = 27 days): under the CDNOW
# parameters its P(alive) falls below 0.3 on day 53, well before 60 quiet days (day 87)
FREQUENT = [ev("purchase", 3 * n) for n in range(10)]
# an occasional one (x = 1): its P(alive) stays above 0.3 until inactivity moves it
OCCASIONAL = [ev("purchase", 0), ev("purchase", 27)]


@settings(max_examples=300, deadline=None)
@given(models(), st.integers(1, 500), st.integers(0, 3000), st.integers(0, 6000))
def test_the_pure_p_alive_is_the_model_librarys(
    model: AliveModel, x: int, span: int, age: int
) -> None:
    ours = p_alive(model, x, span, age)
    theirs = library_p_alive(model, x, span / 7, max(age, span) / 7)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert p_alive(model, 0, 0, age) == 1.0


@settings(max_examples=300, deadline=None)
@given(models(), st.integers(1, 500), st.floats(0.0, 500.0), thresholds)
def test_p_alive_is_below_the_threshold_exactly_after_the_crossing_time(
    model: AliveModel, x: int, t_x: float, threshold: float
) -> None:
    t_star = crossing_age(model, x, t_x, threshold)
    at_last_purchase = library_p_alive(model, x, t_x, t_x)
    if t_star is None:  # below (or at) θ already on the last purchase day
        assert at_last_purchase <= threshold * (1 + 1e-9)
        return
    assume(t_star < 1e6)
    assert t_star >= t_x * (1 - 1e-9)
    assert library_p_alive(model, x, t_x, t_star) == pytest.approx(threshold, rel=1e-6)
    later = t_star + max(1e-3, t_star * 1e-6)
    assert library_p_alive(model, x, t_x, later) < threshold
    if t_star - max(1e-3, t_star * 1e-6) > t_x:
        earlier = t_star - max(1e-3, t_star * 1e-6)
        assert library_p_alive(model, x, t_x, earlier) > threshold


@settings(max_examples=300, deadline=None)
@given(models(), st.integers(1, 200), st.integers(0, 2000), thresholds)
def test_the_crossing_day_is_the_first_day_below_the_threshold(
    model: AliveModel, x: int, span: int, threshold: float
) -> None:
    limit = span + 4000
    day = crossing_day(model, x, span, threshold, limit)
    limit_odds = math.log(1 / threshold - 1)
    if day is None:
        below_at_last = log_odds_inactive(model, x, span, span) > limit_odds
        never_before_limit = log_odds_inactive(model, x, span, limit - 1) <= limit_odds
        assert below_at_last or never_before_limit
        return
    assert span < day < limit
    assert p_alive(model, x, span, day) < threshold
    assert log_odds_inactive(model, x, span, day - 1) <= limit_odds
    assert library_p_alive(model, x, span / 7, day / 7) < threshold * (1 + 1e-9)
    assert library_p_alive(model, x, span / 7, (day - 1) / 7) >= threshold * (1 - 1e-9)


def test_the_frequent_buyer_goes_at_risk_at_the_start_of_the_crossing_day() -> None:
    state, _ = fold(FREQUENT)
    crossing = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=53)
    assert crossing_day(CDNOW, 9, 27, 0.3, 1000) == 53
    just_before, moves = advance(state, crossing - timedelta(microseconds=1), ON, CDNOW)
    assert moves == []
    assert just_before == state
    moved, moves = advance(state, crossing, ON, CDNOW)
    assert [(m.to_stage, m.at, m.event_id) for m in moves] == [(Stage.AT_RISK, crossing, "")]
    score = p_alive(CDNOW, 9, 27, 53)
    assert score < 0.3 <= p_alive(CDNOW, 9, 27, 52)
    assert moves[0].reason == lapse_reason(score, 0.3, 7)
    assert moves[0].reason == "p_alive 0.2989 < 0.3 (model 7)"
    assert moved.stage_entered_at == crossing
    # churn stays an inactivity move, counted from the last activity
    churned, more = advance(moved, T0 + timedelta(days=27 + 180), ON, CDNOW)
    assert [(m.to_stage, m.reason) for m in more] == [(Stage.CHURNED, "inactive")]
    assert churned.stage is Stage.CHURNED


def test_an_event_after_the_crossing_finds_the_customer_at_risk_from_the_crossing() -> None:
    visit = ev("site_visit", 55)
    state, moves = fold([*FREQUENT, visit])
    assert [m.to_stage for m in moves][-1] is Stage.AT_RISK
    assert moves[-1].at == datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=53)
    assert state.stage is Stage.AT_RISK
    assert state.last_seen_at == visit.occurred_at
    assert rebuild("cust-1", [visit, *reversed(FREQUENT)], ON, model=CDNOW) == state


def test_a_crossing_before_the_last_activity_is_dated_at_it() -> None:
    # a visit on day 60 applied without the model (fitted later): the crossing (day 53) came
    # before it, the move is dated at the visit, never before what was applied
    state, _ = fold([*FREQUENT, ev("site_visit", 60)], model=None)
    assert state.stage is Stage.RETENTION or state.stage is Stage.LOYALTY
    moved, moves = advance(state, T0 + timedelta(days=61), ON, CDNOW)
    assert [(m.to_stage, m.at) for m in moves] == [(Stage.AT_RISK, state.last_seen_at)]
    assert moves[0].reason == "p_alive 0.1689 < 0.3 (model 7)"  # its score on day 60
    assert moves[0].reason == lapse_reason(p_alive(CDNOW, 9, 27, 60), 0.3, 7)
    assert moved.stage is Stage.AT_RISK


def test_a_customer_above_the_threshold_is_left_to_the_inactivity_rule() -> None:
    state, _ = fold(OCCASIONAL)
    quiet = T0 + timedelta(days=27 + 60)
    assert advance(state, quiet - timedelta(seconds=1), ON, CDNOW)[1] == []
    _, moves = advance(state, quiet, ON, CDNOW)
    assert [(m.to_stage, m.at, m.reason) for m in moves] == [(Stage.AT_RISK, quiet, "inactive")]
    one_purchase, _ = fold([ev("purchase", 0)])
    assert predicted_lapse(one_purchase, CDNOW, 0.99, T0 + timedelta(days=999)) is None


def test_a_comeback_does_not_fire_the_rule_again_at_once() -> None:
    state, _ = fold([*FREQUENT, ev("site_visit", 55), ev("purchase", 56)])
    assert state.stage is Stage.RETENTION
    assert state.reactivations == 1
    assert state.purchase_days == 11
    later, moves = advance(state, T0 + timedelta(days=60), ON, CDNOW)
    assert moves == []
    assert later == state
    # the new crossing (x = 10, t_x = 56 days) comes later, as the model says
    day = crossing_day(CDNOW, 10, 56, 0.3, 10_000)
    assert day is not None
    assert day > 57
    crossing = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=day)
    assert advance(state, crossing - timedelta(microseconds=1), ON, CDNOW)[1] == []
    _, moves = advance(state, crossing, ON, CDNOW)
    assert [(m.to_stage, m.at) for m in moves] == [(Stage.AT_RISK, crossing)]


def test_a_threshold_above_the_best_score_of_the_customer_never_moves_it() -> None:
    # right after its last purchase the frequent buyer's P(alive) is (b+x-1)/(a+b+x-1) ~ 0.93:
    # with θ above that it would be "below" every day, so the rule leaves it to inactivity
    state, _ = fold(FREQUENT)
    high = LifecycleRules.model_validate({"at_risk": {"p_alive_below": 0.95}})
    _, moves = advance(state, T0 + timedelta(days=40), high, CDNOW)
    assert moves == []
    assert crossing_age(CDNOW, 9, 27 / 7, 0.95) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=15), st.integers(0, 400))
def test_the_rule_is_off_by_default_and_without_a_model(days: list[int], until: int) -> None:
    events = [ev("purchase", d, n) for n, d in enumerate(days)]
    plain = rebuild("cust-1", events, RULES, T0 + timedelta(days=until))
    assert rebuild("cust-1", events, RULES, T0 + timedelta(days=until), CDNOW) == plain
    assert rebuild("cust-1", events, ON, T0 + timedelta(days=until)) == plain
    state, _ = fold(events, RULES, None)
    for rules, model in ((RULES, CDNOW), (ON, None)):
        assert advance(state, T0 + timedelta(days=until), rules, model) == advance(
            state, T0 + timedelta(days=until), RULES
        )


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 120), min_size=1, max_size=15), st.integers(0, 300))
def test_with_the_rule_on_the_move_is_at_the_crossing_and_never_before(
    days: list[int], until: int
) -> None:
    events = [ev("purchase", d, n) for n, d in enumerate(days)]
    state, _ = fold(events)
    now = T0 + timedelta(days=until)
    after, moves = advance(state, now, ON, CDNOW)
    lapse = predicted_lapse(
        state, CDNOW, 0.3, state.last_seen_at + timedelta(days=ON.at_risk.inactive_days)
    )
    if lapse is None or lapse.at > now:
        assert all(m.reason == "inactive" for m in moves)
        return
    assert moves[0].to_stage is Stage.AT_RISK
    assert (moves[0].at, moves[0].reason) == (lapse.at, lapse.reason)
    assert lapse.at.time().isoformat() == "00:00:00" or lapse.at == state.last_seen_at
    assert advance(state, lapse.at - timedelta(microseconds=1), ON, CDNOW)[1] == []
    assert advance(after, now, ON, CDNOW) == (after, [])  # idempotent


def test_the_threshold_must_be_a_probability_strictly_between_0_and_1() -> None:
    assert parse_rules("at_risk:\n  inactive_days: 60\n  p_alive_below: 0.3\n") == ON
    assert parse_rules("at_risk:\n  p_alive_below: null\n").at_risk.p_alive_below is None
    assert LifecycleRules().at_risk.p_alive_below is None
    for bad in ("0", "1", "1.5", "-0.1", ".nan", "often"):
        text = f"version: 1\nat_risk:\n  inactive_days: 60\n  p_alive_below: {bad}\n"
        with pytest.raises(RulesError, match=r"lifecycle.yaml:4: at_risk.p_alive_below"):
            parse_rules(text, source="lifecycle.yaml")
