"""Compiling a condition: :func:`compile_condition` turns the tree into closures over the
state's attributes (:class:`Predicate`), built once per segment version and run for every
customer a write changes. Pure: time is passed in, scores come from a :data:`ScoreSource`.

``next_change`` reads the tree in three-valued logic (true, false, not known without the
scores): an ``all`` that is false stays false until every false item has changed, so a
customer outside a segment for a reason time cannot change is never due."""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final, TypeAlias, cast

from clm_domain.bounds import SUM_CONTEXT
from clm_domain.customer_state import CustomerState
from clm_domain.segments.facts import FACTS, NULLABLE, Kind
from clm_domain.segments.nodes import AllOf, AnyOf, DaysSince, FactTest, Node, Not, Value, walk

#: The scores of a customer on a UTC date (keys ``p_alive``, ``expected_purchases_90d``,
#: ``predicted_clv``); None when it has none (no model, no purchases).
ScoreSource: TypeAlias = Callable[[CustomerState, date], Mapping[str, float | None] | None]
#: A compiled node: (state, now, scores) → bool. The third argument is a :class:`_Scores`
#: where the node reads scores, and is ignored (may be anything) where it does not.
_Test: TypeAlias = Callable[[CustomerState, datetime, Any], bool]
#: A compiled node's value now (None: not known without the scores) and the earliest
#: instant it may change by time alone (None: never).
_Change: TypeAlias = Callable[[CustomerState, datetime], tuple[bool | None, datetime | None]]

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


@dataclass(frozen=True, slots=True)
class Predicate:
    """A compiled condition.

    - ``matches(state, now, scores)``: whether the customer is in; ``scores`` is asked at
      most once, and only when a score fact decides.
    - ``next_change(state, now)``: the earliest instant after ``now`` at which ``matches``
      may change by time passing alone (None: never); it is constant until then.
    """

    node: Node
    matches: Callable[[CustomerState, datetime, ScoreSource | None], bool]
    next_change: Callable[[CustomerState, datetime], datetime | None]
    uses_scores: bool
    time_relative: bool


def compile_condition(node: Node) -> Predicate:
    """The predicate of a parsed condition."""
    root = _test(node)
    uses_scores = _uses_scores(node)
    time_relative = uses_scores or any(isinstance(leaf, DaysSince) for leaf in walk(node))
    matches: Callable[[CustomerState, datetime, ScoreSource | None], bool]
    if uses_scores:

        def matches(state: CustomerState, now: datetime, scores: ScoreSource | None) -> bool:
            return root(state, now, _Scores(scores, state, now))

    else:
        matches = root  # reads no scores: the third argument is never touched
    next_change: Callable[[CustomerState, datetime], datetime | None] = _never
    if time_relative:
        change = _change(node)

        def next_change(state: CustomerState, now: datetime) -> datetime | None:
            return change(state, now)[1]

    return Predicate(node, matches, next_change, uses_scores, time_relative)


def _never(state: CustomerState, now: datetime) -> datetime | None:
    return None


class _Scores:
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


def _uses_scores(node: Node) -> bool:
    return any(isinstance(leaf, FactTest) and FACTS[leaf.fact] is Kind.SCORE for leaf in walk(node))


# --- matches ------------------------------------------------------------------------------


def _test(node: Node) -> _Test:
    if isinstance(node, AllOf | AnyOf):
        # items that read no scores first: they may decide without asking for any
        items = sorted(node.items, key=_uses_scores)
        tests = tuple(_test(item) for item in items)
        if len(tests) == 1:
            return tests[0]
        return _every(tests) if isinstance(node, AllOf) else _some(tests)
    if isinstance(node, Not):
        inner = _test(node.item)
        return lambda s, n, c: not inner(s, n, c)
    if isinstance(node, DaysSince):
        return _days_since(node)
    kind = FACTS[node.fact]
    if kind is Kind.SCORE:
        return _score(node)
    if node.fact == "average_order_value":
        return _average_order_value(node.op, node.value)
    return _fact(node)


def _every(tests: tuple[_Test, ...]) -> _Test:
    def every(s: CustomerState, n: datetime, c: Any) -> bool:
        for test in tests:  # noqa: SIM110 (a loop costs no generator per call)
            if not test(s, n, c):
                return False
        return True

    return every


def _some(tests: tuple[_Test, ...]) -> _Test:
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


def _fact(node: FactTest) -> _Test:
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


def _score(node: FactTest) -> _Test:
    name = node.fact
    if node.op == "exists":
        want = node.value
        return lambda s, n, c: (c.value(name) is not None) is want
    test = value_test(node.op, node.value)

    def score(s: CustomerState, n: datetime, c: Any) -> bool:
        x = c.value(name)
        return x is not None and test(x)

    return score


def _average_order_value(op: str, value: Value) -> _Test:
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


def _days_since(node: DaysSince) -> _Test:
    get = operator.attrgetter(node.fact)
    if node.op == "exists":
        want = node.value
        return lambda s, n, c: (get(s) is not None) is want
    test = value_test(node.op, node.value)

    def days_since(s: CustomerState, n: datetime, c: Any) -> bool:
        at = get(s)
        return at is not None and test((n - at) // DAY)

    return days_since


# --- next_change --------------------------------------------------------------------------


def _change(node: Node) -> _Change:
    if not _time_relative(node):
        test = _test(node)
        return lambda s, n: (test(s, n, None), None)
    if isinstance(node, AllOf | AnyOf):
        return _group_change(tuple(_change(item) for item in node.items), isinstance(node, AllOf))
    if isinstance(node, Not):
        inner = _change(node.item)

        def negated(s: CustomerState, n: datetime) -> tuple[bool | None, datetime | None]:
            value, at = inner(s, n)
            return (None if value is None else not value), at

        return negated
    if isinstance(node, DaysSince):
        return _days_since_change(node)
    return lambda s, n: (None, next_utc_midnight(n))  # a score: a function of the UTC date


def _time_relative(node: Node) -> bool:
    return _uses_scores(node) or any(isinstance(leaf, DaysSince) for leaf in walk(node))


def _group_change(items: tuple[_Change, ...], every: bool) -> _Change:
    """An ``all`` (``every``) or ``any``: one item that settles it (false for ``all``, true
    for ``any``) keeps it settled until every such item has changed; otherwise it may change
    when the first item does."""
    settling = not every

    def group(s: CustomerState, n: datetime) -> tuple[bool | None, datetime | None]:
        results = [item(s, n) for item in items]
        settled = [at for value, at in results if value is settling]
        if settled:
            if None in settled:
                return settling, None
            return settling, max(settled)  # type: ignore[type-var]
        known = all(value is not None for value, _ in results)
        times = [at for _, at in results if at is not None]
        return (not settling if known else None), min(times, default=None)

    return group


def _boundaries(op: str, value: Value) -> tuple[int, ...]:
    """The day counts d at which ``d op value`` may differ from ``d - 1 op value``."""
    days = cast(tuple[int, ...], value if isinstance(value, tuple) else (value,))
    if op in ("in", "eq", "ne"):
        points = {p for v in days for p in (v, v + 1)}
    elif op == "between":
        points = {days[0], days[1] + 1}
    else:
        points = {days[0] + 1 if op in ("le", "gt") else days[0]}
    return tuple(sorted(points))


def _days_since_change(node: DaysSince) -> _Change:
    get = operator.attrgetter(node.fact)
    if node.op == "exists":
        want = node.value
        return lambda s, n: ((get(s) is not None) is want, None)
    test = value_test(node.op, node.value)
    points = _boundaries(node.op, node.value)

    def change(s: CustomerState, n: datetime) -> tuple[bool | None, datetime | None]:
        at = get(s)
        if at is None:
            return False, None
        days = (n - at) // DAY
        value = test(days)
        for point in points[bisect_right(points, days) :]:
            if test(point) != value:
                try:
                    return value, at + point * DAY
                except OverflowError:
                    return value, None
        return value, None

    return change
