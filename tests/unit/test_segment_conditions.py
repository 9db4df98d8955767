"""The segment condition language (``clm_domain.segments.conditions``): what parses, what is
refused and where (the JSON path of the wrong node), the canonical form, the JSON Schema, and
the examples in the README and the reference."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]

from clm_domain.segments import (
    AllOf,
    ConditionError,
    DaysSince,
    FactTest,
    Not,
    condition_json_schema,
    dump_condition,
    parse_condition,
    schema_files,
)
from clm_domain.segments.__main__ import main
from clm_domain.segments.facts import FACTS, KIND_OPS, OPS, Kind
from clm_domain.stages import Stage
from tests.segment_factories import condition_docs

ROOT = Path(__file__).resolve().parents[2]
LEAF = {"fact": "purchases", "op": "ge", "value": 1}


def _aware_date_time(value: object) -> bool:
    """ISO 8601 with an offset (jsonschema checks ``date-time`` only with an extra package)."""
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


FORMATS = FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(_aware_date_time)
SCHEMA = orjson.loads((ROOT / "deploy/schemas/segment-condition.schema.json").read_bytes())
Draft202012Validator.check_schema(SCHEMA)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FORMATS)


def refused(doc: object) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(doc)
    err = caught.value
    assert str(err) == f"{err.path}: {err.message}"
    assert isinstance(err, ValueError)
    return err


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = LEAF
    for _ in range(depth - 1):
        doc = {"not": doc}
    return doc


@pytest.mark.parametrize(
    ("doc", "path", "says"),
    [
        ([LEAF], "$", "must be a condition object"),
        ({}, "$", "needs exactly one of all, any, not, fact, days_since (has none)"),
        ({"all": [LEAF], "fact": "purchases"}, "$", "(has all and fact)"),
        ({"all": [{"not": LEAF, "any": [LEAF]}]}, "$.all[0]", "(has any and not)"),
        (
            {"all": [LEAF, {"fact": "colour", "op": "eq", "value": 1}]},
            "$.all[1].fact",
            "unknown fact 'colour'",
        ),
        ({"fact": 7, "op": "eq", "value": 1}, "$.fact", "unknown fact int"),
        (
            {"any": [{"fact": "stage", "op": "lt", "value": "reach"}]},
            "$.any[0].op",
            "takes eq, ne, in, exists, not 'lt'",
        ),
        (
            {"fact": "p_alive", "op": "eq", "value": 0.5},
            "$.op",
            "the score fact 'p_alive' takes lt",
        ),
        ({"fact": "last_seen_at", "op": "in", "value": []}, "$.op", "not 'in'"),
        ({"fact": "purchases", "op": "like", "value": 1}, "$.op", "unknown operator 'like'"),
        ({"fact": "purchases", "value": 1}, "$.op", "is required"),
        ({"fact": "purchases", "op": "eq"}, "$.value", "is required"),
        ({"fact": "purchases", "op": "eq", "value": "3"}, "$.value", "must be a whole number"),
        ({"fact": "purchases", "op": "eq", "value": True}, "$.value", "must be a whole number"),
        ({"fact": "purchases", "op": "eq", "value": 2.5}, "$.value", "must be a whole number"),
        ({"fact": "purchases", "op": "gt", "value": -1}, "$.value", "must be a whole number"),
        ({"fact": "first_source", "op": "eq", "value": 3}, "$.value", "must be text"),
        (
            {"fact": "first_source", "op": "eq", "value": "x" * 201},
            "$.value",
            "must be text of 1 to 200",
        ),
        ({"fact": "first_source", "op": "eq", "value": "a\nb"}, "$.value", "no control characters"),
        (
            {"not": {"fact": "stage", "op": "in", "value": ["reach", "lurking"]}},
            "$.not.value[1]",
            "unknown stage 'lurking'",
        ),
        ({"fact": "stage", "op": "eq", "value": None}, "$.value", "unknown stage NoneType"),
        (
            {"fact": "purchases", "op": "between", "value": [5, 2]},
            "$.value",
            "the lower bound is above the upper bound",
        ),
        (
            {"fact": "revenue", "op": "between", "value": ["10.5", 10]},
            "$.value",
            "lower bound is above",
        ),
        (
            {"fact": "purchases", "op": "between", "value": [1, 2, 3]},
            "$.value",
            "must be a list [lo, hi]",
        ),
        (
            {"fact": "purchases", "op": "between", "value": [1, "x"]},
            "$.value[1]",
            "must be a whole number",
        ),
        ({"fact": "purchases", "op": "in", "value": []}, "$.value", "list of 1 to 500"),
        (
            {"fact": "purchases", "op": "in", "value": list(range(501))},
            "$.value",
            "list of 1 to 500",
        ),
        ({"fact": "purchases", "op": "in", "value": 3}, "$.value", "list of 1 to 500"),
        (
            {"fact": "review_average", "op": "gt", "value": math.inf},
            "$.value",
            "must be a finite number",
        ),
        ({"fact": "p_alive", "op": "lt", "value": math.nan}, "$.value", "must be a finite number"),
        ({"fact": "p_alive", "op": "lt", "value": 10**400}, "$.value", "must be a finite number"),
        ({"fact": "revenue", "op": "gt", "value": math.inf}, "$.value", "must be a finite number"),
        ({"fact": "revenue", "op": "gt", "value": "1e3"}, "$.value", "must be a decimal number"),
        (
            {"fact": "revenue", "op": "gt", "value": "0.00001"},
            "$.value",
            "at most 4 decimal places",
        ),
        ({"fact": "revenue", "op": "gt", "value": 10**14}, "$.value", "must be within"),
        ({"fact": "revenue", "op": "gt", "value": None}, "$.value", "must be a decimal number"),
        (
            {"fact": "converted_at", "op": "gt", "value": "2026-01-01T00:00:00"},
            "$.value",
            "needs a UTC offset",
        ),
        (
            {"fact": "converted_at", "op": "gt", "value": "2026-01-01"},
            "$.value",
            "needs a UTC offset",
        ),
        ({"fact": "converted_at", "op": "gt", "value": "yesterday"}, "$.value", "ISO 8601"),
        (
            {"fact": "converted_at", "op": "gt", "value": "1960-01-01T00:00:00Z"},
            "$.value",
            "must be from 1970",
        ),
        ({"fact": "converted_at", "op": "gt", "value": 1767225600}, "$.value", "ISO 8601"),
        (
            {"days_since": "purchases", "op": "gt", "value": 3},
            "$.days_since",
            "must be a time fact",
        ),
        ({"days_since": "last_seen_at", "op": "gt", "value": -1}, "$.value", "from 0 to 36600"),
        ({"days_since": "last_seen_at", "op": "gt", "value": 36601}, "$.value", "from 0 to 36600"),
        ({"days_since": "last_seen_at", "op": "gt", "value": "30"}, "$.value", "whole number"),
        (
            {"fact": "first_channel", "op": "exists", "value": "yes"},
            "$.value",
            "must be true or false",
        ),
        ({"fact": "purchases", "op": "eq", "value": 1, "unit": "x"}, "$.unit", "unknown key"),
        ({"all": [LEAF], "op": "eq"}, "$.op", "unknown key"),
        ({"not": LEAF, "value": 1}, "$.value", "unknown key"),
        ({"all": []}, "$.all", "must be a list of 1 to 50 conditions"),
        ({"any": [LEAF] * 51}, "$.any", "must be a list of 1 to 50 conditions"),
        ({"all": LEAF}, "$.all", "must be a list of 1 to 50"),
        ({"any": [LEAF, None]}, "$.any[1]", "must be a condition object, not NoneType"),
        ({"not": [LEAF]}, "$.not", "must be a condition object, not list"),
        (nested(9), "$" + ".not" * 8, "nests deeper than 8 levels"),
        ({"all": [{"all": [LEAF] * 40}] * 5}, "$.all[4].all[34]", "more than 200 nodes"),
    ],
)
def test_a_bad_condition_names_the_wrong_node(doc: object, path: str, says: str) -> None:
    err = refused(doc)
    assert err.path == path
    assert says in err.message


def test_the_bounds_themselves_are_accepted() -> None:
    assert isinstance(parse_condition(nested(8)), Not)
    assert isinstance(
        parse_condition({"all": [{"all": [LEAF] * 38}] * 5 + [LEAF] * 4}), AllOf
    )  # 200 nodes
    parse_condition({"fact": "purchases", "op": "in", "value": list(range(500))})
    parse_condition({"any": [LEAF] * 50})
    parse_condition({"fact": "first_source", "op": "eq", "value": "x" * 200})
    parse_condition({"days_since": "last_seen_at", "op": "le", "value": 36600})
    parse_condition({"fact": "revenue", "op": "ge", "value": "99999999999999.9999"})
    parse_condition({"fact": "net_revenue", "op": "lt", "value": "-99999999999999.9999"})


def test_values_are_normalised() -> None:
    assert parse_condition({"fact": "stage", "op": "in", "value": ["Awareness", " purchase "]}) == (
        FactTest("stage", "in", (Stage.REACH, Stage.CONVERSION))
    )
    time = parse_condition(
        {"fact": "last_seen_at", "op": "lt", "value": "2026-03-01T02:00:00+02:00"}
    )
    assert dump_condition(time)["value"] == "2026-03-01T00:00:00+00:00"
    money = parse_condition({"fact": "revenue", "op": "between", "value": [59.9, "100"]})
    assert dump_condition(money)["value"] == ["59.9", "100"]
    assert parse_condition({"fact": "purchases", "op": "eq", "value": 3.0}) == FactTest(
        "purchases", "eq", 3
    )
    assert parse_condition({"fact": "first_channel", "op": "exists"}) == FactTest(
        "first_channel", "exists", True
    )
    assert parse_condition({"days_since": "converted_at", "op": "gt", "value": 7}) == DaysSince(
        "converted_at", "gt", 7
    )


@settings(max_examples=300, deadline=None)
@given(condition_docs())
def test_every_valid_condition_round_trips_and_fits_the_schema(doc: dict[str, Any]) -> None:
    node = parse_condition(doc)
    canonical = dump_condition(node)
    assert parse_condition(canonical) == node
    assert dump_condition(parse_condition(canonical)) == canonical
    wire = orjson.loads(orjson.dumps(canonical))
    assert parse_condition(wire) == node
    assert list(VALIDATOR.iter_errors(wire)) == []
    assert hash(node) == hash(parse_condition(wire))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["all", "any", "not", "fact", "days_since", "op", "value", "x"])
                | st.sampled_from(sorted(FACTS)),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    )
)
def test_any_document_parses_or_is_refused_with_a_path(doc: object) -> None:
    """Whatever JSON comes in, the parser gives a condition or a ConditionError (never
    another exception), whose path is a JSON path."""
    errors: list[ConditionError] = []
    try:
        parse_condition(doc)
    except ConditionError as err:
        errors.append(err)
    for found in errors:
        assert re.fullmatch(r"\$(\.[a-z_0-9]+|\[\d+\])*", found.path), found.path
        assert found.message


@pytest.mark.parametrize(
    "doc",
    [
        {"fact": "purchases", "op": "eq", "value": 1, "x": 1},
        {"fact": "stage", "op": "lt", "value": "reach"},
        {"fact": "purchases", "op": "in", "value": []},
        {"fact": "purchases", "op": "between", "value": [1]},
        {"fact": "first_source", "op": "eq", "value": 1},
        {"fact": "converted_at", "op": "lt", "value": 3},
        {"fact": "revenue", "op": "lt", "value": "abc"},
        {"days_since": "purchases", "op": "gt", "value": 1},
        {"all": []},
        {"all": [LEAF], "any": [LEAF]},
        {"not": LEAF, "fact": "stage"},
        {"fact": "purchases", "op": "eq"},
    ],
)
def test_the_schema_refuses_what_the_parser_refuses(doc: dict[str, Any]) -> None:
    refused(doc)
    assert list(VALIDATOR.iter_errors(doc)) != []


def test_the_schema_covers_every_fact_and_operator() -> None:
    text = json.dumps(condition_json_schema())
    for fact in FACTS:
        assert f'"{fact}"' in text
    assert set(OPS) == {op for ops in KIND_OPS.values() for op in ops}
    assert {kind for kind in Kind} == set(FACTS.values())


def test_the_committed_schemas_are_what_the_code_makes_now() -> None:
    """Regenerate with ``python -m clm_domain.segments --schema`` after a change."""
    for name, text in schema_files().items():
        assert (ROOT / "deploy/schemas" / name).read_text() == text, name


def test_the_generator_writes_the_schema_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--schema", str(tmp_path / "out")]) == 0
    written = {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}
    assert written == schema_files()
    assert sorted(written) == ["clm.segments.v1.schema.json", "segment-condition.schema.json"]
    assert "wrote" in capsys.readouterr().out


def _readme_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Segments\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| [^|]+ \| `(\{.*\})` \|$", section, re.MULTILINE)


def _doc_examples() -> list[dict[str, Any]]:
    text = (ROOT / "docs/segments.md").read_text()
    blocks = [
        json.loads(b) for b in re.findall(r"^```json\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]
    return [b for b in blocks if "schema" not in b]


README_EXAMPLES = _readme_examples()
DOC_EXAMPLES = _doc_examples()


def test_the_readme_shows_ten_examples() -> None:
    assert len(README_EXAMPLES) == 10


@pytest.mark.parametrize("text", README_EXAMPLES)
def test_every_readme_example_parses(text: str) -> None:
    doc = json.loads(text)
    parse_condition(doc)
    assert list(VALIDATOR.iter_errors(doc)) == []


@pytest.mark.parametrize("doc", DOC_EXAMPLES, ids=[str(i) for i in range(len(DOC_EXAMPLES))])
def test_every_reference_example_parses(doc: dict[str, Any]) -> None:
    parse_condition(doc)
    assert list(VALIDATOR.iter_errors(doc)) == []


def test_the_reference_lists_every_fact_and_operator() -> None:
    text = (ROOT / "docs/segments.md").read_text()
    for name in [*FACTS, *OPS]:
        assert f"`{name}`" in text, name
