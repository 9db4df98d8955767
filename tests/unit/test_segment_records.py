"""The ``clm.segments.v1`` record contract (``clm_domain.segments.records``): produced records
fit the committed JSON Schema and the type, record ids are stable per span and distinct for
enter and exit, and the schema is not vacuous."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker  # type: ignore[import-untyped]
from pydantic import TypeAdapter

from clm_domain.segments import (
    SEGMENTS_SCHEMA,
    Segment,
    SegmentRecord,
    compile_condition,
    parse_condition,
    segment_record,
)
from clm_domain.segments.records import CAUSES, KINDS, Cause, RecordKind, record_id

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
SEGMENT = Segment(
    7,
    2,
    "bought this month",
    compile_condition(parse_condition({"days_since": "last_purchase_at", "op": "lt", "value": 30})),
)


def _aware_date_time(value: object) -> bool:
    """ISO 8601 with an offset (jsonschema checks ``date-time`` only with an extra package)."""
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


FORMATS = FormatChecker()
FORMATS.checks("date-time", raises=ValueError)(_aware_date_time)
SCHEMA = orjson.loads((ROOT / f"deploy/schemas/{SEGMENTS_SCHEMA}.schema.json").read_bytes())
Draft202012Validator.check_schema(SCHEMA)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FORMATS)
ADAPTER: TypeAdapter[SegmentRecord] = TypeAdapter(SegmentRecord)


def errors(raw: bytes) -> list[str]:
    doc = orjson.loads(raw)
    found = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)
    ]
    if not found:
        ADAPTER.validate_python(doc)
    return found


def enter(**kw: Any) -> bytes:
    args: dict[str, Any] = {
        "segment": SEGMENT,
        "customer_id": "cust-42",
        "at": T0,
        "entered_at": T0,
        "cause": "event",
        "event_id": "shop:e1",
    }
    return segment_record("enter", **{**args, **kw})


def leave(**kw: Any) -> bytes:
    args: dict[str, Any] = {
        "segment": SEGMENT,
        "customer_id": "cust-42",
        "at": T0 + timedelta(days=30),
        "entered_at": T0,
        "cause": "sweep",
    }
    return segment_record("exit", **{**args, **kw})


def test_an_enter_and_its_exit() -> None:
    came, went = orjson.loads(enter()), orjson.loads(leave())
    assert came == {
        "schema": "clm.segments.v1",
        "kind": "enter",
        "record_id": "segment:7:cust-42:enter@2026-03-01T10:15:00+00:00",
        "segment_id": 7,
        "segment_name": "bought this month",
        "segment_version": 2,
        "customer_id": "cust-42",
        "at": "2026-03-01T10:15:00+00:00",
        "entered_at": "2026-03-01T10:15:00+00:00",
        "cause": "event",
        "event_id": "shop:e1",
    }
    assert went["record_id"] == "segment:7:cust-42:exit@2026-03-01T10:15:00+00:00"
    assert went["at"] == "2026-03-31T10:15:00+00:00"
    assert went["entered_at"] == came["at"]
    assert went["event_id"] is None
    assert errors(enter()) == []
    assert errors(leave()) == []


def test_record_ids_are_stable_per_span_and_distinct_for_enter_and_exit() -> None:
    paris = timezone(timedelta(hours=1))
    same = enter(at=T0.astimezone(paris), entered_at=T0.astimezone(paris), cause="backfill")
    assert orjson.loads(same)["record_id"] == orjson.loads(enter())["record_id"]
    assert orjson.loads(same)["at"] == orjson.loads(enter())["at"]  # written in UTC
    later = leave(at=T0 + timedelta(days=90), cause="erasure")
    assert orjson.loads(later)["record_id"] == orjson.loads(leave())["record_id"]
    next_span = enter(at=T0 + timedelta(days=31), entered_at=T0 + timedelta(days=31))
    ids = {orjson.loads(r)["record_id"] for r in (enter(), leave(), next_span)}
    assert len(ids) == 3
    other = Segment(8, 1, "x", SEGMENT.predicate)
    assert orjson.loads(enter(segment=other))["record_id"] != orjson.loads(enter())["record_id"]
    assert (
        orjson.loads(enter(customer_id="cust-43"))["record_id"]
        != orjson.loads(enter())["record_id"]
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(KINDS),
    st.sampled_from(CAUSES),
    st.integers(1, 2**62),
    st.integers(1, 10_000),
    st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s),
    st.text(min_size=1, max_size=40),
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9899, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=14))]
        ),
    ),
    st.integers(0, 10**6),
    st.none() | st.text(min_size=1, max_size=60),
)
def test_every_record_fits_the_schema_and_the_type(
    kind: RecordKind,
    cause: Cause,
    segment_id: int,
    version: int,
    customer_id: str,
    name: str,
    entered_at: datetime,
    minutes: int,
    event_id: str | None,
) -> None:
    segment = Segment(segment_id, version, name, SEGMENT.predicate)
    at = entered_at if kind == "enter" else entered_at + timedelta(minutes=minutes)
    raw = segment_record(
        kind,
        segment=segment,
        customer_id=customer_id,
        at=at,
        entered_at=entered_at,
        cause=cause,
        event_id=event_id,
    )
    assert errors(raw) == []
    doc = orjson.loads(raw)
    assert doc["record_id"] == record_id(kind, segment_id, customer_id, entered_at)
    assert datetime.fromisoformat(doc["at"]) == at
    assert datetime.fromisoformat(doc["entered_at"]) == entered_at


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema", "clm.segments.v2"),
        ("kind", "joined"),
        ("cause", "whim"),
        ("segment_id", "7"),
        ("segment_version", None),
        ("at", "2026-03-01 10:15"),
        ("entered_at", "2026-03-01T10:15:00"),
        ("event_id", 3),
        ("customer_id", None),
    ],
)
def test_the_schema_is_not_vacuous(field: str, value: Any) -> None:
    doc = orjson.loads(leave())
    doc[field] = value
    assert errors(orjson.dumps(doc)) != []
    del doc[field]
    assert list(VALIDATOR.iter_errors(doc)) != []


def test_the_schema_lists_the_kinds_and_causes() -> None:
    text = json.dumps(SCHEMA)
    for word in (*get_args(RecordKind), *get_args(Cause)):
        assert f'"{word}"' in text


@pytest.mark.parametrize(
    ("kind", "kw", "says"),
    [
        ("enter", {"at": T0 + timedelta(seconds=1)}, "entered_at is its at"),
        ("exit", {"at": T0 - timedelta(seconds=1)}, "before its span started"),
        ("leave", {}, "not a segment record"),
        ("exit", {"cause": "boredom"}, "not a segment record"),
        (
            "enter",
            {"at": T0.replace(tzinfo=None), "entered_at": T0.replace(tzinfo=None)},
            "UTC offset",
        ),
    ],
)
def test_a_record_that_cannot_be_is_refused(kind: Any, kw: dict[str, Any], says: str) -> None:
    args: dict[str, Any] = {
        "segment": SEGMENT,
        "customer_id": "c",
        "at": T0,
        "entered_at": T0,
        "cause": "event",
        **kw,
    }
    with pytest.raises(ValueError, match=re.escape(says)):
        segment_record(kind, **args)


def test_the_reference_example_is_a_valid_record() -> None:
    text = (ROOT / "docs/segments.md").read_text()
    blocks = [
        json.loads(b) for b in re.findall(r"^```json\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]
    records = [b for b in blocks if "schema" in b]
    assert records
    for doc in records:
        assert errors(orjson.dumps(doc)) == []
        assert doc["record_id"] == record_id(
            doc["kind"],
            doc["segment_id"],
            doc["customer_id"],
            datetime.fromisoformat(doc["entered_at"]),
        )
