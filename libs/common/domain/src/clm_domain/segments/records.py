"""The ``clm.segments.v1`` record contract: one record each time a customer enters or leaves
a segment, published by the stage engine through its outbox (``docs/segments.md``). The JSON
Schema in ``deploy/schemas/`` is generated from :class:`SegmentRecord`
(``python -m clm_domain.segments --schema``)."""

# No ``from __future__ import annotations``: pydantic reads the TypedDict's annotations.
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, get_args

import orjson
from pydantic import ConfigDict, TypeAdapter, WithJsonSchema, with_config
from typing_extensions import TypedDict

from clm_domain.segments.membership import Segment

SEGMENTS_SCHEMA: Final = "clm.segments.v1"
RECORD_SCHEMA_FILE: Final = f"{SEGMENTS_SCHEMA}.schema.json"

RecordKind = Literal["enter", "exit"]
Cause = Literal["event", "sweep", "backfill", "merge", "erasure", "definition"]
#: Every cause of a membership change, as :data:`Cause` lists them.
CAUSES: Final[tuple[str, ...]] = get_args(Cause)
KINDS: Final[tuple[str, ...]] = get_args(RecordKind)
#: A time: ISO 8601 text with its offset, in UTC.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


@with_config(ConfigDict(use_attribute_docstrings=True))
class SegmentRecord(TypedDict):
    """A customer entered (``enter``) or left (``exit``) a segment."""

    schema: Literal["clm.segments.v1"]
    kind: RecordKind
    record_id: str
    """``segment:{segment_id}:{customer_id}:{kind}@{entered_at}``: the same for a span's
    enter (or exit) however often it is sent."""
    segment_id: int
    segment_name: str
    segment_version: int
    """The definition's version that decided."""
    customer_id: str
    at: Timestamp
    """When it happened (a sweep: when it became due, not when it was noticed)."""
    entered_at: Timestamp
    """The start of the membership span (``at`` itself for ``enter``)."""
    cause: Cause
    event_id: str | None
    """``source:event_id`` of the event that caused it; null for the other causes."""


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("a segment record's times need a UTC offset")
    return (at if at.tzinfo is UTC else at.astimezone(UTC)).isoformat()


def record_id(kind: str, segment_id: int, customer_id: str, entered_at: datetime) -> str:
    """The id of a span's ``enter`` or ``exit`` record."""
    return f"segment:{segment_id}:{customer_id}:{kind}@{_iso(entered_at)}"


def segment_record(
    kind: RecordKind,
    *,
    segment: Segment,
    customer_id: str,
    at: datetime,
    entered_at: datetime,
    cause: Cause,
    event_id: str | None = None,
) -> bytes:
    """The JSON of one ``clm.segments.v1`` record."""
    if kind not in KINDS or cause not in CAUSES:
        raise ValueError(f"not a segment record: kind {kind!r}, cause {cause!r}")
    if kind == "enter" and at != entered_at:
        raise ValueError("an enter record's entered_at is its at")
    if at < entered_at:
        raise ValueError("a segment record cannot be before its span started")
    entered = _iso(entered_at)
    record: SegmentRecord = {
        "schema": SEGMENTS_SCHEMA,
        "kind": kind,
        "record_id": f"segment:{segment.id}:{customer_id}:{kind}@{entered}",
        "segment_id": segment.id,
        "segment_name": segment.name,
        "segment_version": segment.version,
        "customer_id": customer_id,
        "at": entered if at == entered_at else _iso(at),
        "entered_at": entered,
        "cause": cause,
        "event_id": event_id,
    }
    return orjson.dumps(record)


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a ``clm.segments.v1`` record."""
    doc = TypeAdapter(SegmentRecord).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": SEGMENTS_SCHEMA,
        "description": (
            "A record of the CLM Stream segment stream (generated from "
            "clm_domain.segments.records; see docs/segments.md)."
        ),
        **doc,
    }
