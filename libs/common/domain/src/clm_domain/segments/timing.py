"""When a compiled condition may change by time alone: each node compiled to
``(state, now) -> (value, at)``, its value now in three-valued logic (None: not known without
the scores) and the earliest instant after ``now`` it may change (None: never).

An ``all`` that is false stays false until every false item has changed (an ``any`` that is
true, dually), so a customer outside a segment for a reason time cannot change is never due;
a ``days_since`` leaf flips exactly at a day boundary of its time fact; a score leaf may change
at the next 00:00 UTC (scores are a function of the UTC date), unless the customer never bought
(then it has no scores)."""

from __future__ import annotations

import operator
from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime
from typing import TypeAlias, cast

from clm_domain.customer_state import CustomerState
from clm_domain.segments.evaluate import (
    DAY,
    Test,
    next_utc_midnight,
    test_of,
    uses_scores,
    value_test,
)
from clm_domain.segments.nodes import AllOf, AnyOf, DaysSince, FactTest, Node, Not, Value, walk

#: A compiled node's value now (None: not known without the scores) and the earliest
#: instant it may change by time alone (None: never).
Change: TypeAlias = Callable[[CustomerState, datetime], tuple[bool | None, datetime | None]]


def time_relative(node: Node) -> bool:
    """Whether time alone may change the node's value (a ``days_since`` or a score in it)."""
    return uses_scores(node) or any(isinstance(leaf, DaysSince) for leaf in walk(node))


def change_of(node: Node) -> Change:
    """The compiled ``(state, now) -> (value, at)`` of a node."""
    if not time_relative(node):
        test = test_of(node)
        return lambda s, n: (test(s, n, None), None)
    if isinstance(node, AllOf | AnyOf):
        fixed = tuple(test_of(i) for i in node.items if not time_relative(i))
        moving = tuple(change_of(i) for i in node.items if time_relative(i))
        return _group_change(fixed, moving, isinstance(node, AllOf))
    if isinstance(node, Not):
        inner = change_of(node.item)

        def negated(s: CustomerState, n: datetime) -> tuple[bool | None, datetime | None]:
            value, at = inner(s, n)
            return (None if value is None else not value), at

        return negated
    if isinstance(node, DaysSince):
        return _days_since_change(node)
    assert isinstance(node, FactTest)
    return _score_change(node)


def _score_change(node: FactTest) -> Change:
    """A score is a function of the UTC date: it may change at the next 00:00 UTC. A
    customer who never bought has none (the :data:`ScoreSource` contract), whatever the day."""
    unscored = node.op == "exists" and node.value is False

    def change(s: CustomerState, n: datetime) -> tuple[bool | None, datetime | None]:
        if s.last_purchase_at is None:
            return unscored, None
        return None, next_utc_midnight(n)

    return change


def _group_change(fixed: tuple[Test, ...], moving: tuple[Change, ...], every: bool) -> Change:
    """An ``all`` (``every``) or ``any`` of items time cannot change (``fixed``) and items
    it can (``moving``). An item with the settling value (false for ``all``, true for
    ``any``) keeps the group so until every such item has changed; otherwise the group may
    change when the first item does."""
    settling = not every

    def group(s: CustomerState, n: datetime) -> tuple[bool | None, datetime | None]:
        for test in fixed:
            if test(s, n, None) == settling:
                return settling, None
        known, first, last, settled = True, None, None, False
        for item in moving:
            value, at = item(s, n)
            if value is settling:
                if at is None:
                    return settling, None
                settled = True
                last = at if last is None or at > last else last
            else:
                known = known and value is not None
                if at is not None and (first is None or at < first):
                    first = at
        if settled:
            return settling, last
        return (not settling if known else None), first

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


def _days_since_change(node: DaysSince) -> Change:
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
