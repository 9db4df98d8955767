"""Reading and writing lifecycle records: :func:`encode` to JSON, :func:`decode` from it.

:func:`decode` checks only what is cheap (the schema, the kind, the kind's essential keys);
times and money stay text as on the wire (:func:`as_datetime`, :func:`as_decimal` read them).
The types are in :mod:`clm_domain.record_types`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, cast, get_args, get_type_hints

import orjson

from clm_domain.record_types import (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMAS,
    EventDoc,
    LifecycleRecord,
    LifecycleRecordV1,
    LifecycleRecordV2,
    Money,
    SlimEvent,
    Timestamp,
)

#: The envelope fields of an event a timeline item keeps.
_ENVELOPE: Final = (
    "event_id",
    "type",
    "occurred_at",
    "source",
    "channel",
    "customer_id",
    "anonymous_id",
)
#: The event properties a timeline item keeps (what counting needs).
SLIM_PROPERTIES: Final = ("amount", "currency", "status", "csat", "rating", "score", "ticket_id")

_VERSIONS: Final = {SCHEMA_V1: LifecycleRecordV1, SCHEMA_V2: LifecycleRecordV2}


def _kind(record_type: Any) -> str:
    kind: str = get_args(get_type_hints(record_type)["kind"])[0]
    return kind


#: The required keys of each kind, per schema (from the types).
REQUIRED_KEYS: Final[dict[str, dict[str, frozenset[str]]]] = {
    schema: {_kind(t): frozenset(t.__required_keys__) for t in get_args(union)}
    for schema, union in _VERSIONS.items()
}
#: The keys :func:`decode` insists on: what no engine version ever left out and a consumer
#: cannot count without. The other keys of a kind are required of producers (the JSON
#: Schema), but v1 records written before some of them existed (``transitions``,
#: ``stage_before_entered_at``) must still be read, not refused as poison.
ESSENTIAL: Final[dict[str, frozenset[str]]] = {
    "event": frozenset({"record_id", "event"}),
    "time": frozenset({"record_id", "customer_id"}),
    "identity_merge": frozenset({"record_id", "customer_id", "merged_into"}),
    "erasure": frozenset({"record_id", "customer_id"}),
    "customer_merge": frozenset({"record_id", "customer_id"}),
    "correction": frozenset({"record_id", "corrected"}),
    "restatement": frozenset({"record_id", "customer_id", "retract", "add"}),
}
#: The kinds of each schema.
KINDS: Final[dict[str, frozenset[str]]] = {s: frozenset(k) for s, k in REQUIRED_KEYS.items()}


class BadRecord(ValueError):
    """A lifecycle record that is not one: ``field`` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def encode(record: LifecycleRecord) -> bytes:
    """The record as JSON: datetimes as ISO 8601, ``Decimal``s as decimal text, stages (a
    ``StrEnum``) as their value; an ``orjson.Fragment`` (see :func:`event_json`) as it is."""
    return orjson.dumps(record, default=_default)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(type(value).__name__)


def event_json(raw: bytes) -> EventDoc:
    """An event's JSON (``dump_event``, or the bytes it came in) to put in a record as it is:
    :func:`encode` copies it without parsing it again. Typed as the document it encodes."""
    return cast(EventDoc, orjson.Fragment(raw))


def decode(raw: bytes | str) -> LifecycleRecord:
    """Parse a record; check its ``schema`` (v1 or v2), its ``kind`` (one of that schema's)
    and that the kind's :data:`ESSENTIAL` keys are there. Nothing else is checked (values keep their
    wire types: read times with :func:`as_datetime`, money with :func:`as_decimal`).

    Raises :class:`BadRecord` naming the field."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord("record", f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadRecord("record", f"not a JSON object but {type(doc).__name__}")
    # the first v1 engines wrote event records without a kind
    schema, kind = doc.get("schema"), doc.get("kind", "event" if "kind" not in doc else None)
    kinds = REQUIRED_KEYS.get(schema) if isinstance(schema, str) else None
    if kinds is None:
        raise BadRecord("schema", f"{schema!r} is not one of {', '.join(SCHEMAS)}")
    if not isinstance(kind, str) or kind not in kinds:
        raise BadRecord("kind", f"{kind!r} is not a {schema} kind ({', '.join(sorted(kinds))})")
    missing = ESSENTIAL[kind].difference(doc)  # a dict argument: one hashed look-up a key
    if missing:
        raise BadRecord(min(missing), f"missing from a {schema} {kind} record")
    return cast(LifecycleRecord, doc)


def as_datetime(value: Timestamp) -> datetime:
    """A record's time as an aware ``datetime``."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def as_decimal(value: Money) -> Decimal:
    """A record's amount as a ``Decimal``."""
    return value if isinstance(value, Decimal) else Decimal(value)


def slim_event(event: Mapping[str, Any]) -> SlimEvent:
    """An event's JSON (an :class:`EventDoc`) as a timeline item carries it: the envelope and
    only the :data:`SLIM_PROPERTIES` it has."""
    slim = {key: event[key] for key in _ENVELOPE if key in event}
    properties = event.get("properties") or {}
    slim["properties"] = {k: properties[k] for k in SLIM_PROPERTIES if k in properties}
    return cast(SlimEvent, slim)
