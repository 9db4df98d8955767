"""Segments: named conditions over a customer's facts, evaluated live (``docs/segments.md``).

- :mod:`~clm_domain.segments.conditions`: the condition language, parsed and bounded;
- :mod:`~clm_domain.segments.compile`: conditions compiled to predicates (``matches``,
  ``next_change``);
- :mod:`~clm_domain.segments.membership`: a customer's segments, when they may change, what
  changed;
- :mod:`~clm_domain.segments.records`: the ``clm.segments.v1`` record contract.

``python -m clm_domain.segments --schema [DIR]`` writes the JSON Schemas (``deploy/schemas``).
"""

from __future__ import annotations

import json

from clm_domain.segments.compile import Predicate, ScoreSource, compile_condition
from clm_domain.segments.condition_schema import SCHEMA_FILE as CONDITION_SCHEMA_FILE
from clm_domain.segments.conditions import (
    ConditionError,
    condition_json_schema,
    dump_condition,
    parse_condition,
)
from clm_domain.segments.facts import FACTS, Kind
from clm_domain.segments.membership import Segment, changes, due_at, members_of
from clm_domain.segments.nodes import AllOf, AnyOf, DaysSince, FactTest, Node, Not
from clm_domain.segments.records import (
    RECORD_SCHEMA_FILE,
    SEGMENTS_SCHEMA,
    SegmentRecord,
    record_json_schema,
    segment_record,
)

__all__ = [
    "FACTS",
    "SEGMENTS_SCHEMA",
    "AllOf",
    "AnyOf",
    "ConditionError",
    "DaysSince",
    "FactTest",
    "Kind",
    "Node",
    "Not",
    "Predicate",
    "ScoreSource",
    "Segment",
    "SegmentRecord",
    "changes",
    "compile_condition",
    "condition_json_schema",
    "due_at",
    "dump_condition",
    "members_of",
    "parse_condition",
    "record_json_schema",
    "schema_files",
    "segment_record",
]


def schema_files() -> dict[str, str]:
    """File name → text of the segment JSON Schemas, as committed in ``deploy/schemas``."""
    return {
        CONDITION_SCHEMA_FILE: json.dumps(condition_json_schema(), indent=2) + "\n",
        RECORD_SCHEMA_FILE: json.dumps(record_json_schema(), indent=2) + "\n",
    }
