"""Parsing segment conditions: :func:`parse_condition` checks a JSON document against the
language (``docs/segments.md``) and its bounds, and gives the immutable tree of
:mod:`clm_domain.segments.nodes`; :class:`ConditionError` names the JSON path of the first
wrong node (``$.all[2].value``). Pure: no I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from clm_domain.bounds import MONEY_MAX, MONEY_PLACES, is_label, utc_time
from clm_domain.segments.condition_schema import condition_json_schema
from clm_domain.segments.facts import (
    DAYS_SINCE_OPS,
    FACTS,
    KIND_OPS,
    MAX_COUNT,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_ITEMS,
    MAX_NODES,
    MAX_STRING,
    OPS,
    TIME_FACTS,
    Kind,
)
from clm_domain.segments.nodes import (
    AllOf,
    AnyOf,
    DaysSince,
    FactTest,
    Node,
    Not,
    Scalar,
    Value,
    dump_condition,
)
from clm_domain.stages import STAGE_NAMES, Stage, parse_stage

__all__ = ["ConditionError", "condition_json_schema", "dump_condition", "parse_condition"]

HEADS: Final = ("all", "any", "not", "fact", "days_since")
_LEAF_KEYS: Final = frozenset({"op", "value"})
_QUANTUM: Final = Decimal(1).scaleb(-MONEY_PLACES)
_DECIMAL: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?")


class ConditionError(ValueError):
    """A condition that is not one: ``path`` is the JSON path of the wrong node
    (``$.all[2].value``), ``message`` what is wrong with it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def parse_condition(doc: object) -> Node:
    """The condition tree of a JSON document (as ``json.loads`` gives it), or
    :class:`ConditionError` naming the first wrong node."""
    return _Parser().node(doc, "$", 1)


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def node(self, doc: object, path: str, depth: int) -> Node:
        if not isinstance(doc, dict):
            raise ConditionError(path, f"must be a condition object, not {_shown(doc)}")
        heads = [key for key in HEADS if key in doc]
        if len(heads) != 1:
            found = " and ".join(heads) if heads else "none"
            raise ConditionError(path, f"needs exactly one of {', '.join(HEADS)} (has {found})")
        if depth > MAX_DEPTH:
            raise ConditionError(path, f"nests deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConditionError(path, f"the condition has more than {MAX_NODES} nodes")
        head = heads[0]
        allowed = _LEAF_KEYS if head in ("fact", "days_since") else frozenset()
        for key in doc:
            if key != head and key not in allowed:
                raise ConditionError(f"{path}.{str(key)[:MAX_STRING]}", "unknown key")
        if head == "not":
            return Not(self.node(doc["not"], f"{path}.not", depth + 1))
        if head in ("all", "any"):
            items = self.items(doc[head], f"{path}.{head}", depth)
            return AllOf(items) if head == "all" else AnyOf(items)
        return _leaf(doc, head, path)

    def items(self, doc: object, path: str, depth: int) -> tuple[Node, ...]:
        if not isinstance(doc, list) or not 1 <= len(doc) <= MAX_ITEMS:
            raise ConditionError(path, f"must be a list of 1 to {MAX_ITEMS} conditions")
        return tuple(self.node(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(doc))


def _leaf(doc: dict[Any, Any], head: str, path: str) -> FactTest | DaysSince:
    fact = doc[head]
    if head == "fact":
        if not isinstance(fact, str) or fact not in FACTS:
            raise ConditionError(f"{path}.fact", f"unknown fact {_shown(fact)}")
        kind, ops = FACTS[fact], KIND_OPS[FACTS[fact]]
        what = f"the {kind.value} fact {fact!r}"
    else:
        if not isinstance(fact, str) or fact not in TIME_FACTS:
            raise ConditionError(
                f"{path}.days_since", f"must be a time fact ({', '.join(TIME_FACTS)})"
            )
        kind, ops, what = Kind.TIME, DAYS_SINCE_OPS, "days_since"
    if "op" not in doc:
        raise ConditionError(f"{path}.op", "is required")
    op = doc["op"]
    if not isinstance(op, str) or op not in OPS:
        raise ConditionError(f"{path}.op", f"unknown operator {_shown(op)} ({', '.join(OPS)})")
    if op not in ops:
        raise ConditionError(f"{path}.op", f"{what} takes {', '.join(ops)}, not {op!r}")
    scalar = _day_count if head == "days_since" else _SCALARS[kind]
    value = _value(doc, op, scalar, f"{path}.value")
    return FactTest(fact, op, value) if head == "fact" else DaysSince(fact, op, value)


def _value(doc: dict[Any, Any], op: str, scalar: Callable[[object], Scalar], path: str) -> Value:
    if op == "exists":
        flag = doc.get("value", True)
        if not isinstance(flag, bool):
            raise ConditionError(path, "must be true or false")
        return flag
    if "value" not in doc:
        raise ConditionError(path, "is required")
    raw = doc["value"]
    if op == "in":
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IN_VALUES:
            raise ConditionError(path, f"must be a list of 1 to {MAX_IN_VALUES} values")
        return tuple(_scalar(scalar, item, f"{path}[{i}]") for i, item in enumerate(raw))
    if op == "between":
        if not isinstance(raw, list) or len(raw) != 2:
            raise ConditionError(path, "must be a list [lo, hi]")
        lo, hi = (_scalar(scalar, item, f"{path}[{i}]") for i, item in enumerate(raw))
        if lo > hi:  # type: ignore[operator]
            raise ConditionError(path, "the lower bound is above the upper bound")
        return (lo, hi)
    return _scalar(scalar, raw, path)


def _scalar(scalar: Callable[[object], Scalar], raw: object, path: str) -> Scalar:
    try:
        return scalar(raw)
    except ValueError as err:
        raise ConditionError(path, str(err)) from None


def _shown(raw: object) -> str:
    text = repr(raw) if isinstance(raw, str) else type(raw).__name__
    return text if len(text) <= 60 else f"{text[:57]}..."


def _text(raw: object) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_STRING:
        raise ValueError(f"must be text of 1 to {MAX_STRING} characters")
    if not is_label(raw):
        raise ValueError("must have no control characters")
    return raw


def _stage(raw: object) -> Stage:
    try:
        return parse_stage(_text(raw))
    except ValueError:
        raise ValueError(f"unknown stage {_shown(raw)} (one of {', '.join(STAGE_NAMES)})") from None


def _integer(raw: object, top: int) -> int:
    if isinstance(raw, float) and raw.is_integer():  # 3.0: a JSON number is a number
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= top:
        raise ValueError(f"must be a whole number from 0 to {top}")
    return raw


def _count(raw: object) -> int:
    return _integer(raw, MAX_COUNT)


def _day_count(raw: object) -> int:
    return _integer(raw, MAX_DAYS)


def _real(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("must be a number")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _money(raw: object) -> Decimal:
    if isinstance(raw, str):
        if len(raw) > MAX_STRING or _DECIMAL.fullmatch(raw) is None:
            raise ValueError("must be a decimal number such as 59.90")
        amount = Decimal(raw)
    else:
        amount = Decimal(repr(_real(raw))) if isinstance(raw, float) else Decimal(_count_like(raw))
    if not abs(amount) <= MONEY_MAX:
        raise ValueError(f"must be within ±{MONEY_MAX}")
    try:
        exact = amount == amount.quantize(_QUANTUM)
    except InvalidOperation:
        exact = False
    if not exact:
        raise ValueError(f"must have at most {MONEY_PLACES} decimal places")
    return amount


def _count_like(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError("must be a decimal number (a JSON number or decimal text)")
    return raw


def _time(raw: object) -> datetime:
    if not isinstance(raw, str) or len(raw) > MAX_STRING:
        raise ValueError("must be an ISO 8601 date and time with a UTC offset")
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError("must be an ISO 8601 date and time with a UTC offset") from None
    if value.tzinfo is None:
        raise ValueError("needs a UTC offset (such as Z or +02:00)")
    return utc_time(value)


_SCALARS: Final[dict[Kind, Callable[[object], Scalar]]] = {
    Kind.STAGE: _stage,
    Kind.TEXT: _text,
    Kind.COUNT: _count,
    Kind.MONEY: _money,
    Kind.RATIO: _real,
    Kind.TIME: _time,
    Kind.SCORE: _real,
}
