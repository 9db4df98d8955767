"""Evaluating a segment condition: each node compiled to a closure over the state's
attribute getters, ``(state, now, scores) -> bool``. A closure that reads no score ignores its
third argument, so a predicate without score facts runs with no allocation per call; one that
reads scores gets a :class:`LazyScores`, which asks the source once, on first use."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final, TypeAlias, cast

from clm_domain.bounds import SUM_CONTEXT
from clm_domain.customer_state import CustomerState
from clm_domain.segments.facts import FACTS, NULLABLE, Kind
from clm_domain.segments.nodes import AllOf, AnyOf, DaysSince, FactTest, Node, Not, Value, walk

#: The scores of a customer on a UTC date (keys ``p_alive``, ``expected_purchases_90d``,
#: ``predicted_clv``); None when it has none (no model, no purchases). A function of the
#: state and the date only, and None for a customer who never bought (``last_purchase_at``
#: null): ``next_change`` relies on both.
ScoreSource: TypeAlias = Callable[[CustomerState, date], Mapping[str, float | None] | None]
#: A compiled node: (state, now, scores) -> bool. The third argument is a
#: :class:`LazyScores` where the node reads scores, and is ignored where it does not.
Test: TypeAlias = Callable[[CustomerState, datetime, Any], bool]

DAY: Final = timedelta(days=1)
_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
#: ``x op v`` as ``partial(_FLIPPED[op], v)(x)``: one C call.
_FLIPPED: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.gt,
    "le": operator.ge,
    "gt": operator.lt,
    "ge": operator.le,
}


class LazyScores:
    """One evaluation's scores, asked for on first use."""

    __slots__ = ("_asked", "_now", "_source", "_state", "_values")

    def __init__(self, source: ScoreSource | None, state: CustomerState, now: datetime) -> None:
        self._source, self._state, self._now = source, state, now
        self._asked = False
        self._values: Mapping[str, float | None] | None = None

    def value(self, name: str) -> float | None:
        if not self._asked:
            self._asked = True
            if self._source is not None:
                self._values = self._source(self._state, utc_date(self._now))
        return None if self._values is None else self._values.get(name)


def utc_date(now: datetime) -> date:
    """The UTC calendar date of ``now`` (what scores are a function of)."""
    return (now if now.tzinfo is UTC else now.astimezone(UTC)).date()


def next_utc_midnight(now: datetime) -> datetime | None:
    """00:00 UTC of the day after ``now`` (None past the calendar's end)."""
    try:
        return datetime.combine(utc_date(now) + DAY, time(), UTC)
    except OverflowError:
        return None


def uses_scores(node: Node) -> bool:
    """Whether the node reads a score."""
    return any(isinstance(leaf, FactTest) and FACTS[leaf.fact] is Kind.SCORE for leaf in walk(node))


# --- matches ------------------------------------------------------------------------------


def test_of(node: Node) -> Test:
    if isinstance(node, AllOf | AnyOf):
        # items that read no scores first: they may decide without asking for any
        items = sorted(node.items, key=uses_scores)
        tests = tuple(test_of(item) for item in items)
        if len(tests) == 1:
            return tests[0]
        return _every(tests) if isinstance(node, AllOf) else _some(tests)
    if isinstance(node, Not):
        inner = test_of(node.item)
        return lambda s, n, c: not inner(s, n, c)
    if isinstance(node, DaysSince):
        return _days_since(node)
    kind = FACTS[node.fact]
    if kind is Kind.SCORE:
        return _score(node)
    if node.fact == "average_order_value":
        return _average_order_value(node.op, node.value)
    return _fact(node)


def _every(tests: tuple[Test, ...]) -> Test:
    def every(s: CustomerState, n: datetime, c: Any) -> bool:
        for test in tests:  # noqa: SIM110 (a loop costs no generator per call)
            if not test(s, n, c):
                return False
        return True

    return every


def _some(tests: tuple[Test, ...]) -> Test:
    def some(s: CustomerState, n: datetime, c: Any) -> bool:
        for test in tests:  # noqa: SIM110 (a loop costs no generator per call)
            if test(s, n, c):
                return True
        return False

    return some


def _tickets_open(s: CustomerState) -> int:
    return max(s.tickets_opened - s.tickets_solved, 0)


def _net_revenue(s: CustomerState) -> Decimal:
    return SUM_CONTEXT.subtract(s.revenue, s.refunded)


def _review_average(s: CustomerState) -> float | None:
    return s.review_sum / s.reviews if s.reviews else None


#: The facts that are not a state field, by how they are read.
_DERIVED: Final[dict[str, Callable[[CustomerState], Any]]] = {
    "tickets_open": _tickets_open,
    "net_revenue": _net_revenue,
    "review_average": _review_average,
}


def getter(fact: str) -> Callable[[CustomerState], Any]:
    """How a state fact is read (not the scores, not ``average_order_value``)."""
    return _DERIVED.get(fact) or operator.attrgetter(fact)


def value_test(op: str, value: Value) -> Callable[[Any], bool]:
    """``x op value`` for a fact's non-null value ``x`` (not ``exists``)."""
    if op == "in":
        assert isinstance(value, tuple)
        return frozenset(value).__contains__
    if op == "between":
        assert isinstance(value, tuple)
        lo, hi = value
        return lambda x: lo <= x <= hi
    return partial(_FLIPPED[op], value)


def _fact(node: FactTest) -> Test:
    get = getter(node.fact)
    if node.op == "exists":
        want = node.value
        if node.fact not in NULLABLE:
            return lambda s, n, c: want is True
        return lambda s, n, c: (get(s) is not None) is want
    test = value_test(node.op, node.value)
    if node.fact not in NULLABLE:
        return lambda s, n, c: test(get(s))

    def fact(s: CustomerState, n: datetime, c: Any) -> bool:
        x = get(s)
        return x is not None and test(x)

    return fact


def _score(node: FactTest) -> Test:
    name = node.fact
    if node.op == "exists":
        want = node.value
        return lambda s, n, c: (c.value(name) is not None) is want
    test = value_test(node.op, node.value)

    def score(s: CustomerState, n: datetime, c: Any) -> bool:
        x = c.value(name)
        return x is not None and test(x)

    return score


def _average_order_value(op: str, value: Value) -> Test:
    """revenue / purchases compared exactly: ``revenue op value * purchases``."""
    if op == "exists":
        return lambda s, n, c: (s.purchases > 0) is value
    times = SUM_CONTEXT.multiply
    amounts = cast(tuple[Decimal, ...], value if isinstance(value, tuple) else (value,))
    if op == "in":
        return lambda s, n, c: (
            s.purchases > 0 and any(s.revenue == times(v, s.purchases) for v in amounts)
        )
    if op == "between":
        lo, hi = amounts
        return lambda s, n, c: (
            s.purchases > 0 and times(lo, s.purchases) <= s.revenue <= times(hi, s.purchases)
        )
    compare, amount = _OPERATORS[op], amounts[0]
    return lambda s, n, c: s.purchases > 0 and compare(s.revenue, times(amount, s.purchases))


def _days_since(node: DaysSince) -> Test:
    get = operator.attrgetter(node.fact)
    if node.op == "exists":
        want = node.value
        return lambda s, n, c: (get(s) is not None) is want
    test = value_test(node.op, node.value)

    def days_since(s: CustomerState, n: datetime, c: Any) -> bool:
        at = get(s)
        return at is not None and test((n - at) // DAY)

    return days_since
