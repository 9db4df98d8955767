"""Hypothesis strategies for segment tests: valid condition documents (as a client would
send them), customer states, instants, score sources, and an interpreter of condition
documents written apart from ``clm_domain.segments.compile`` (the oracle)."""

from __future__ import annotations

import operator
import random
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import strategies as st

from clm_domain.customer_state import CustomerState
from clm_domain.segments.facts import DAYS_SINCE_OPS, FACTS, KIND_OPS, TIME_FACTS, Kind
from clm_domain.stages import STAGE_NAMES, Stage, parse_stage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LABELS = ("web", "shop", "ads", "email", "EUR", "USD", "*")
SPAN_H = 24 * 90  # states and instants lie within ±90 days of T0

Doc = dict[str, Any]

# --- values -------------------------------------------------------------------------------


def _offset_text(at: datetime, minutes: int) -> str:
    return at.astimezone(timezone(timedelta(minutes=minutes))).isoformat()


times = st.builds(
    lambda h, s: T0 + timedelta(hours=h, seconds=s),
    st.integers(-SPAN_H, SPAN_H),
    st.sampled_from([0, 0, 1, 1799, 3599]),
)
time_texts = st.builds(_offset_text, times, st.sampled_from([0, 60, -300, 330, 840, -720]))
amounts = st.builds(
    lambda cents: Decimal(cents).scaleb(-2), st.integers(-5_000, 50_000)
) | st.sampled_from([Decimal(0), Decimal("33.3333"), Decimal("50"), Decimal("19.99")])
money_values = amounts.flatmap(
    lambda d: st.sampled_from(
        [format(d, "f"), float(d)] + ([int(d)] if d == d.to_integral_value() else [])
    )
)

VALUES: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.STAGE: st.sampled_from(STAGE_NAMES),
    Kind.TEXT: st.sampled_from(LABELS),
    Kind.COUNT: st.integers(0, 12),
    Kind.MONEY: money_values,
    Kind.RATIO: st.sampled_from([0, 1, 2.5, 3, 4.2, 5]),
    Kind.TIME: time_texts,
    Kind.SCORE: st.sampled_from([0, 0.1, 0.5, 0.9, 1, 2.5, 120.0]),
}
DAYS = st.integers(0, 60)


def _leaf(head: str, fact: str, op: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[Doc]:
    if op == "exists":
        return st.sampled_from(
            [
                {head: fact, "op": op},
                {head: fact, "op": op, "value": False},
                {head: fact, "op": op, "value": True},
            ]
        )
    if op == "in":
        values = st.lists(value, min_size=1, max_size=4)
    elif op == "between":
        values = st.lists(value, min_size=2, max_size=2).map(_ordered)
    else:
        values = value
    return values.map(lambda v: {head: fact, "op": op, "value": v})


def _ordered(pair: list[Any]) -> list[Any]:
    keys = [_sort_key(v) for v in pair]
    return pair if keys[0] <= keys[1] else pair[::-1]


def _sort_key(value: Any) -> Any:
    if isinstance(value, str) and value[:1].isdigit() and "T" in value:
        return datetime.fromisoformat(value)
    if isinstance(value, str):
        return Fraction(Decimal(value))
    return Fraction(Decimal(repr(value)) if isinstance(value, float) else value)


fact_leaves = st.sampled_from(
    [(fact, op) for fact, kind in FACTS.items() for op in KIND_OPS[kind]]
).flatmap(lambda p: _leaf("fact", p[0], p[1], VALUES[FACTS[p[0]]]))
days_leaves = st.sampled_from([(f, op) for f in TIME_FACTS for op in DAYS_SINCE_OPS]).flatmap(
    lambda p: _leaf("days_since", p[0], p[1], DAYS)
)
leaves = st.one_of(fact_leaves, days_leaves, days_leaves)


def condition_docs(depth: int = 4) -> st.SearchStrategy[Doc]:
    """Valid condition documents, at most ``depth`` levels."""
    if depth <= 1:
        return leaves
    inner = condition_docs(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"all": xs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: {"any": xs}),
        inner.map(lambda x: {"not": x}),
    )


# --- states, instants, scores -------------------------------------------------------------


@st.composite
def states(draw: st.DrawFn) -> CustomerState:
    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy)

    purchases = draw(st.integers(0, 4))
    return CustomerState(
        customer_id="cust-1",
        stage=draw(st.sampled_from(Stage)),
        stage_entered_at=draw(times),
        first_seen_at=draw(times),
        last_seen_at=draw(times),
        first_source=draw(st.sampled_from(LABELS)),
        first_channel=maybe(st.sampled_from(LABELS)),
        first_campaign=maybe(st.sampled_from(LABELS)),
        acquired_at=maybe(times),
        converted_at=maybe(times),
        last_purchase_at=maybe(times),
        purchases=purchases,
        revenue=draw(
            st.sampled_from([Decimal(0), Decimal("100"), Decimal("59.98")]) | amounts.map(abs)
        ),
        refunds=draw(st.integers(0, 2)),
        refunded=draw(st.sampled_from([Decimal(0), Decimal("100.00")]) | amounts.map(abs)),
        purchase_days=draw(st.integers(0, purchases)),
        repeat_spend=draw(amounts.map(abs)),
        purchase_currency=maybe(st.sampled_from(LABELS)),
        tickets_opened=draw(st.integers(0, 4)),
        tickets_solved=draw(st.integers(0, 5)),
        reviews=(reviews := draw(st.integers(0, 3))),
        review_sum=draw(st.integers(reviews, 5 * reviews)),
        last_nps=maybe(st.integers(0, 10)),
        referrals=draw(st.integers(0, 3)),
        reactivations=draw(st.integers(0, 2)),
        events=draw(st.integers(0, 12)),
    )


instants = st.builds(
    lambda h, us: T0 + timedelta(hours=h, microseconds=us),
    st.integers(-SPAN_H - 24 * 70, SPAN_H + 24 * 70),
    st.integers(0, 3_600_000_000 - 1) | st.sampled_from([0, 1]),
)

SCORE_NAMES = ("p_alive", "expected_purchases_90d", "predicted_clv")


def score_source(seed: int) -> Any:
    """Scores that are a function of the state and the UTC date, None for a customer who
    never bought (the ScoreSource contract), sometimes missing or null."""

    def scores(state: CustomerState, day: date) -> Mapping[str, float | None] | None:
        if state.last_purchase_at is None:
            return None
        rng = random.Random(seed * 100_003 + day.toordinal())
        values: dict[str, float | None] = {}
        for name in SCORE_NAMES:
            pick = rng.random()
            if pick < 0.8:
                values[name] = rng.choice([0.05, 0.1, 0.5, 0.7, 0.9, 1.0, 2.5, 120.0, 300.0])
            elif pick < 0.9:
                values[name] = None
        return values

    return scores


# --- the oracle ---------------------------------------------------------------------------

_US_PER_DAY = 86_400 * 10**6


def _whole_days(now: datetime, at: datetime) -> int:
    delta = now - at
    micros = (delta.days * 86_400 + delta.seconds) * 10**6 + delta.microseconds
    return micros // _US_PER_DAY


def _state_fact(state: CustomerState, fact: str) -> Any:
    if fact == "tickets_open":
        return max(state.tickets_opened - state.tickets_solved, 0)
    if fact == "net_revenue":
        return Fraction(state.revenue) - Fraction(state.refunded)
    if fact == "average_order_value":
        return Fraction(state.revenue) / state.purchases if state.purchases else None
    if fact == "review_average":
        return state.review_sum / state.reviews if state.reviews else None
    value = getattr(state, fact)
    if isinstance(value, Decimal):
        return Fraction(value)
    return value.value if isinstance(value, Stage) else value


def _constant(kind: Kind | None, raw: Any) -> Any:
    if kind is Kind.STAGE:
        return parse_stage(raw).value
    if kind is Kind.MONEY:
        return Fraction(Decimal(raw if isinstance(raw, str) else repr(raw)))
    if kind is Kind.TIME:
        return datetime.fromisoformat(raw)
    return raw


_ORDER = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _compare(op: str, x: Any, value: Any) -> bool:
    if op == "in":
        return any(x == v for v in value)
    if op == "between":
        return bool(value[0] <= x <= value[1])
    return bool(_ORDER[op](x, value))


def interpret(doc: Doc, state: CustomerState, now: datetime, scores: Any) -> bool:
    """What a condition document says of ``state`` at ``now``, read the slow way."""
    if "all" in doc:
        return all([interpret(d, state, now, scores) for d in doc["all"]])
    if "any" in doc:
        return any([interpret(d, state, now, scores) for d in doc["any"]])
    if "not" in doc:
        return not interpret(doc["not"], state, now, scores)
    op = doc["op"]
    if "days_since" in doc:
        at = getattr(state, doc["days_since"])
        x, kind = (None if at is None else _whole_days(now, at)), None
    else:
        kind = FACTS[doc["fact"]]
        if kind is Kind.SCORE:
            got = scores(state, now.astimezone(UTC).date()) if scores is not None else None
            x = None if got is None else got.get(doc["fact"])
        else:
            x = _state_fact(state, doc["fact"])
    if op == "exists":
        return (x is not None) is doc.get("value", True)
    if x is None:
        return False
    raw = doc["value"]
    value = [_constant(kind, v) for v in raw] if op in ("in", "between") else _constant(kind, raw)
    return _compare(op, x, value)
