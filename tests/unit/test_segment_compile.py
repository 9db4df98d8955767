"""Compiled segment conditions (``clm_domain.segments.compile``): ``matches`` agrees with a
slow interpreter written apart, ``next_change`` keeps its promise, scores are asked at most
once and only when a score fact is read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_domain.customer_state import CustomerState
from clm_domain.segments import (
    Segment,
    changes,
    compile_condition,
    due_at,
    dump_condition,
    members_of,
    parse_condition,
)
from clm_domain.segments.compile import Predicate, ScoreSource
from clm_domain.segments.facts import TIME_FACTS
from clm_domain.stages import Stage
from tests.segment_factories import T0, condition_docs, instants, interpret, score_source, states

DAY = timedelta(days=1)
TINY = timedelta(microseconds=1)
FAR = timedelta(days=3650)

STATE = CustomerState(
    customer_id="cust-1",
    stage=Stage.CONVERSION,
    stage_entered_at=T0,
    first_seen_at=T0 - 10 * DAY,
    last_seen_at=T0,
    first_source="web",
    converted_at=T0,
    last_purchase_at=T0,
    purchases=3,
    revenue=Decimal("100.00"),
    purchase_days=2,
)


def predicate(doc: dict[str, Any]) -> Predicate:
    return compile_condition(parse_condition(doc))


def counting(source: ScoreSource | None = None) -> tuple[ScoreSource, list[date]]:
    asked: list[date] = []

    def scores(state: CustomerState, day: date) -> Mapping[str, float | None] | None:
        asked.append(day)
        return source(state, day) if source is not None else {"p_alive": 0.4}

    return scores, asked


@settings(max_examples=400, deadline=None)
@given(condition_docs(), states(), instants, st.integers(0, 50))
def test_matches_agrees_with_the_slow_interpreter(
    doc: dict[str, Any], state: CustomerState, now: datetime, seed: int
) -> None:
    node = parse_condition(doc)
    compiled = compile_condition(node)
    scores, asked = counting(score_source(seed))
    expected = interpret(doc, state, now, score_source(seed))
    assert compiled.matches(state, now, scores) is expected
    assert len(asked) <= (1 if compiled.uses_scores else 0)
    assert interpret(dump_condition(node), state, now, scores) is expected
    without = interpret(doc, state, now, None)
    assert compiled.matches(state, now, None) is without


def _samples(state: CustomerState, now: datetime, end: datetime) -> list[datetime]:
    """Instants in [now, end) where a condition could change: just before and at each day
    boundary of every time fact and each UTC midnight, and a few in between."""
    found = {now, end - TINY, now + (end - now) / 3, now + (end - now) / 2}
    for fact in TIME_FACTS:
        at = getattr(state, fact)
        if at is None:
            continue
        first = max((now - at) // DAY, 0)
        for k in range(first, first + 80):
            found.update({at + k * DAY - TINY, at + k * DAY})
    midnight = datetime.combine(now.astimezone(UTC).date(), time(), UTC)
    for k in range(1, 80):
        found.update({midnight + k * DAY - TINY, midnight + k * DAY})
    return sorted(t for t in found if now <= t < end)


@settings(max_examples=250, deadline=None)
@given(condition_docs(), states(), instants, st.integers(0, 50))
def test_matches_is_constant_until_next_change(
    doc: dict[str, Any], state: CustomerState, now: datetime, seed: int
) -> None:
    compiled = predicate(doc)
    scores = score_source(seed)
    at = compiled.next_change(state, now)
    assert at is None or at > now
    if not compiled.time_relative:
        assert at is None
    first = compiled.matches(state, now, scores)
    for t in _samples(state, now, at or now + FAR):
        assert compiled.matches(state, t, scores) is first, t


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(TIME_FACTS),
    st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in", "between"]),
    st.lists(st.integers(0, 40), min_size=1, max_size=4),
    states(),
    instants,
)
def test_a_days_since_leaf_changes_exactly_at_next_change(
    fact: str, op: str, days: list[int], state: CustomerState, now: datetime
) -> None:
    value: Any = {"in": days, "between": [min(days), max(days)]}.get(op, days[0])
    compiled = predicate({"days_since": fact, "op": op, "value": value})
    at = compiled.next_change(state, now)
    before = compiled.matches(state, now, None)
    if at is None:
        for t in _samples(state, now, now + FAR):
            assert compiled.matches(state, t, None) is before
        return
    assert compiled.matches(state, at - TINY, None) is before
    assert compiled.matches(state, at, None) is not before


def test_days_since_counts_whole_days_floored() -> None:
    compiled = predicate({"days_since": "last_purchase_at", "op": "ge", "value": 30})
    assert not compiled.matches(STATE, T0 + 30 * DAY - TINY, None)
    assert compiled.matches(STATE, T0 + 30 * DAY, None)
    assert compiled.next_change(STATE, T0 + 2 * DAY) == T0 + 30 * DAY
    assert compiled.next_change(STATE, T0 + 31 * DAY) is None  # ge stays true
    between = predicate({"days_since": "last_purchase_at", "op": "between", "value": [7, 13]})
    assert between.next_change(STATE, T0) == T0 + 7 * DAY
    assert between.next_change(STATE, T0 + 7 * DAY) == T0 + 14 * DAY
    assert between.next_change(STATE, T0 + 14 * DAY) is None


def test_a_null_time_never_matches_nor_changes() -> None:
    state = replace(STATE, last_purchase_at=None)
    for op in ("lt", "ge", "ne"):
        compiled = predicate({"days_since": "last_purchase_at", "op": op, "value": 3})
        assert not compiled.matches(state, T0, None)
        assert compiled.next_change(state, T0) is None
    gone = predicate({"not": {"days_since": "last_purchase_at", "op": "lt", "value": 3}})
    assert gone.matches(state, T0, None)


def test_an_item_time_cannot_change_keeps_the_group_settled() -> None:
    doc = {
        "all": [
            {"fact": "stage", "op": "eq", "value": "loyalty"},
            {"days_since": "last_purchase_at", "op": "ge", "value": 30},
            {"fact": "p_alive", "op": "lt", "value": 0.3},
        ]
    }
    compiled = predicate(doc)
    assert compiled.time_relative
    assert compiled.uses_scores
    assert compiled.next_change(STATE, T0) is None  # not loyalty: never by time alone
    loyal = replace(STATE, stage=Stage.LOYALTY)
    # false until day 30 passes (the score leaf alone cannot make the all true)
    assert compiled.next_change(loyal, T0 + DAY) == T0 + 30 * DAY
    # past day 30 the score decides: the next UTC midnight
    now = T0 + 40 * DAY + timedelta(hours=3)
    assert compiled.next_change(loyal, now) == datetime.combine(now.date() + DAY, time(), UTC)
    either = predicate({"any": doc["all"]})
    assert either.next_change(loyal, T0) is None  # loyalty: in, whatever time does


def test_scores_are_asked_once_and_only_when_read() -> None:
    scores, asked = counting()
    plain = predicate({"fact": "purchases", "op": "ge", "value": 1})
    assert not plain.uses_scores
    assert not plain.time_relative
    assert plain.matches(STATE, T0, scores)
    assert asked == []
    several = predicate(
        {
            "any": [
                {"fact": "p_alive", "op": "gt", "value": 0.9},
                {"fact": "p_alive", "op": "exists", "value": False},
                {"fact": "expected_purchases_90d", "op": "exists"},
                {"not": {"fact": "predicted_clv", "op": "ge", "value": 1}},
            ]
        }
    )
    assert several.matches(STATE, T0 + timedelta(hours=13), scores)  # predicted_clv absent
    assert asked == [(T0 + timedelta(hours=13)).date()]
    settled = predicate(
        {
            "all": [
                {"fact": "p_alive", "op": "lt", "value": 0.5},
                {"fact": "purchases", "op": "eq", "value": 0},
            ]
        }
    )
    assert not settled.matches(STATE, T0, scores)
    assert len(asked) == 1  # the purchases item decided first


@settings(max_examples=200, deadline=None)
@given(st.lists(condition_docs(3), min_size=1, max_size=6), states(), instants, st.integers(0, 9))
def test_a_customer_is_scored_at_most_once_for_all_segments(
    docs: list[dict[str, Any]], state: CustomerState, now: datetime, seed: int
) -> None:
    scores, asked = counting(score_source(seed))
    segments = [Segment(i + 1, 1, f"s{i}", predicate(doc)) for i, doc in enumerate(docs)]
    members = members_of(segments, state, now, scores)
    assert len(asked) <= 1
    if not any(s.predicate.uses_scores for s in segments):
        assert asked == []
    expected = {
        s.id
        for s, doc in zip(segments, docs, strict=True)
        if interpret(doc, state, now, score_source(seed))
    }
    assert members == expected
    due = due_at(segments, state, now)
    nexts = [s.predicate.next_change(state, now) for s in segments]
    assert due == min((t for t in nexts if t is not None), default=None)


def test_changes_lists_entered_and_left_sorted() -> None:
    assert changes(frozenset({5, 1, 3}), frozenset({3, 9, 2})) == ([2, 9], [1, 5])
    assert changes(frozenset(), frozenset()) == ([], [])


@pytest.mark.parametrize(
    ("doc", "state", "expected"),
    [
        # average order value is revenue / purchases, exactly: 100 / 3 = 33.333…
        ({"fact": "average_order_value", "op": "eq", "value": "33.3333"}, STATE, False),
        ({"fact": "average_order_value", "op": "gt", "value": "33.3333"}, STATE, True),
        ({"fact": "average_order_value", "op": "lt", "value": 33.3334}, STATE, True),
        ({"fact": "average_order_value", "op": "in", "value": [50, "33.3333"]}, STATE, False),
        ({"fact": "average_order_value", "op": "between", "value": [33, 34]}, STATE, True),
        ({"fact": "average_order_value", "op": "exists", "value": False}, STATE, False),
        (
            {"fact": "average_order_value", "op": "ne", "value": 1},
            replace(STATE, purchases=0),
            False,
        ),
        (
            {"fact": "net_revenue", "op": "lt", "value": 0},
            replace(STATE, refunded=Decimal("100.01")),
            True,
        ),
        ({"fact": "tickets_open", "op": "eq", "value": 0}, replace(STATE, tickets_solved=4), True),
        (
            {"fact": "review_average", "op": "ge", "value": 4.5},
            replace(STATE, reviews=2, review_sum=9),
            True,
        ),
        ({"fact": "review_average", "op": "ge", "value": 0}, STATE, False),  # no reviews: null
        ({"fact": "first_channel", "op": "ne", "value": "ads"}, STATE, False),  # null
        ({"not": {"fact": "first_channel", "op": "eq", "value": "ads"}}, STATE, True),
        ({"fact": "stage", "op": "in", "value": ["purchase", "advocacy"]}, STATE, True),
        ({"fact": "stage", "op": "exists", "value": False}, STATE, False),
        ({"fact": "converted_at", "op": "lt", "value": "2026-03-01T13:00:00+01:00"}, STATE, False),
        ({"fact": "converted_at", "op": "le", "value": "2026-03-01T13:00:00+01:00"}, STATE, True),
        ({"fact": "p_alive", "op": "exists"}, STATE, False),  # no score source: null
    ],
)
def test_facts_nulls_and_exact_money(
    doc: dict[str, Any], state: CustomerState, expected: bool
) -> None:
    assert predicate(doc).matches(state, T0, None) is expected


def test_a_score_predicate_is_due_at_the_next_utc_midnight() -> None:
    compiled = predicate({"fact": "p_alive", "op": "lt", "value": 0.3})
    now = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert compiled.next_change(STATE, now) == datetime(2026, 3, 2, tzinfo=UTC)
    tokyo = now.astimezone(timezone(timedelta(hours=9)))  # 2026-03-02 08:30 there
    assert compiled.next_change(STATE, tokyo) == datetime(2026, 3, 2, tzinfo=UTC)


def test_a_customer_who_never_bought_is_never_due_for_scores() -> None:
    never = replace(STATE, purchases=0, converted_at=None, last_purchase_at=None)
    for op, value, matches in [
        ("lt", 0.3, False),
        ("exists", True, False),
        ("exists", False, True),
    ]:
        compiled = predicate({"fact": "p_alive", "op": op, "value": value})
        assert compiled.next_change(never, T0) is None
        assert compiled.matches(never, T0, score_source(1)) is matches
        negated = predicate({"not": {"fact": "p_alive", "op": op, "value": value}})
        assert negated.next_change(never, T0) is None
