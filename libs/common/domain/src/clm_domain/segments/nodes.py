"""The parsed form of a segment condition: an immutable tree of frozen dataclasses, and its
canonical JSON form (:func:`dump_condition`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

from clm_domain.stages import Stage

#: One value a leaf compares with: a stage, text, a count or day number, an amount, a real
#: number or a UTC time.
Scalar: TypeAlias = Stage | str | int | Decimal | float | datetime
#: A leaf's value: a scalar, the list of ``in`` or the ``[lo, hi]`` of ``between``, or the
#: flag of ``exists``.
Value: TypeAlias = Scalar | tuple[Scalar, ...] | bool


@dataclass(frozen=True, slots=True)
class AllOf:
    """True when every item is."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """True when at least one item is."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """True when its item is false."""

    item: Node


@dataclass(frozen=True, slots=True)
class FactTest:
    """``fact op value``: false on a null fact, except for ``exists``."""

    fact: str
    op: str
    value: Value


@dataclass(frozen=True, slots=True)
class DaysSince:
    """``days_since(fact) op value``: whole days from the time fact to now (floored)."""

    fact: str
    op: str
    value: Value


Node: TypeAlias = AllOf | AnyOf | Not | FactTest | DaysSince


def dump_condition(node: Node) -> dict[str, Any]:
    """The canonical JSON form of a condition (``parse_condition`` gives ``node`` back):
    stages by their name, amounts as decimal text, times as ISO 8601 in UTC, ``exists``
    with its flag."""
    if isinstance(node, AllOf):
        return {"all": [dump_condition(item) for item in node.items]}
    if isinstance(node, AnyOf):
        return {"any": [dump_condition(item) for item in node.items]}
    if isinstance(node, Not):
        return {"not": dump_condition(node.item)}
    head = "fact" if isinstance(node, FactTest) else "days_since"
    return {head: node.fact, "op": node.op, "value": _dump_value(node.value)}


def _dump_value(value: Value) -> Any:
    if isinstance(value, tuple):
        return [_dump_value(item) for item in value]
    if isinstance(value, Stage):
        return value.value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def walk(node: Node) -> list[FactTest | DaysSince]:
    """The leaves of a condition, left to right."""
    if isinstance(node, AllOf | AnyOf):
        return [leaf for item in node.items for leaf in walk(item)]
    if isinstance(node, Not):
        return walk(node.item)
    return [node]
