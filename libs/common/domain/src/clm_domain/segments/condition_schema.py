"""The JSON Schema (draft 2020-12) of a segment condition, built from the fact table
(committed as ``deploy/schemas/segment-condition.schema.json``). It describes the shape; the
bounds a schema cannot state (depth, node count, ``lo <= hi``, a stage's aliases) are
:func:`~clm_domain.segments.conditions.parse_condition`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from clm_domain.bounds import MONEY_MAX, TEXT_PATTERN
from clm_domain.segments.facts import (
    COMPARISONS,
    DAYS_SINCE_OPS,
    FACTS,
    KIND_OPS,
    MAX_COUNT,
    MAX_DAYS,
    MAX_IN_VALUES,
    MAX_ITEMS,
    MAX_STRING,
    TIME_FACTS,
    Kind,
)
from clm_domain.stages import STAGE_NAMES

SCHEMA_FILE: Final = "segment-condition.schema.json"
_MONEY_TOP: Final = float(MONEY_MAX)

_VALUES: Final[dict[str, dict[str, Any]]] = {
    Kind.STAGE: {"type": "string", "enum": list(STAGE_NAMES)},
    Kind.TEXT: {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_STRING,
        "pattern": TEXT_PATTERN,
    },
    Kind.COUNT: {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
    Kind.MONEY: {
        "anyOf": [
            {"type": "number", "minimum": -_MONEY_TOP, "maximum": _MONEY_TOP},
            {"type": "string", "maxLength": MAX_STRING, "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
        ]
    },
    Kind.RATIO: {"type": "number"},
    Kind.TIME: {"type": "string", "format": "date-time", "maxLength": MAX_STRING},
    Kind.SCORE: {"type": "number"},
    "days": {"type": "integer", "minimum": 0, "maximum": MAX_DAYS},
}


def _leaf(head: str, names: list[str], ops: tuple[str, ...], value: str) -> dict[str, Any]:
    """A leaf of one kind: its facts, its operators, and the value each operator takes."""
    ref = {"$ref": f"#/$defs/value_{value}"}
    cases: list[dict[str, Any]] = [
        {
            "if": {"properties": {"op": {"const": "exists"}}},
            "then": {"properties": {"value": {"type": "boolean"}}},
        }
    ]
    compared = [op for op in COMPARISONS if op in ops]
    if compared:
        cases.append(_case(compared, ref))
    if "in" in ops:
        cases.append(
            _case(["in"], {"type": "array", "items": ref, "minItems": 1, "maxItems": MAX_IN_VALUES})
        )
    if "between" in ops:
        cases.append(
            _case(["between"], {"type": "array", "items": ref, "minItems": 2, "maxItems": 2})
        )
    return {
        "type": "object",
        "required": [head, "op"],
        "additionalProperties": False,
        "properties": {head: {"enum": names}, "op": {"enum": list(ops)}, "value": {}},
        "allOf": cases,
    }


def _case(ops: Sequence[str], value: dict[str, Any]) -> dict[str, Any]:
    return {
        "if": {"properties": {"op": {"enum": ops}}},
        "then": {"required": ["value"], "properties": {"value": value}},
    }


def _group(head: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [head],
        "additionalProperties": False,
        "properties": {
            head: {
                "type": "array",
                "items": {"$ref": "#/$defs/node"},
                "minItems": 1,
                "maxItems": MAX_ITEMS,
            }
        },
    }


def condition_json_schema() -> dict[str, Any]:
    """The JSON Schema of a condition document."""
    leaves = {
        f"{kind.value}_fact": _leaf(
            "fact", [n for n, k in FACTS.items() if k is kind], KIND_OPS[kind], kind.value
        )
        for kind in Kind
    }
    leaves["days_since"] = _leaf("days_since", list(TIME_FACTS), DAYS_SINCE_OPS, "days")
    negation = {
        "type": "object",
        "required": ["not"],
        "additionalProperties": False,
        "properties": {"not": {"$ref": "#/$defs/node"}},
    }
    nodes = {"all": _group("all"), "any": _group("any"), "not": negation, **leaves}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CLM Stream segment condition",
        "description": (
            "A segment's condition (generated from clm_domain.segments; see docs/segments.md). "
            "The API also checks what a schema cannot: at most 8 levels and 200 nodes, "
            "between's lo <= hi, stage names in any case, money with at most 4 decimal "
            "places, times from 1970 and before 9900."
        ),
        "$ref": "#/$defs/node",
        "$defs": {
            "node": {"oneOf": [{"$ref": f"#/$defs/{name}"} for name in nodes]},
            **nodes,
            **{f"value_{name}": schema for name, schema in _VALUES.items()},
        },
    }
