"""The lifecycle record contract: what the stage engine publishes on ``clm.lifecycle.v1`` and
every downstream consumer (the metrics service first) reads. ``docs/lifecycle-records.md``
explains each kind and how to count it; the JSON Schemas in ``deploy/schemas/`` are generated
from these types (``python -m clm_domain.lifecycle_records --schema``).

The types are ``TypedDict``s: a record is the plain ``dict`` ``orjson`` gives, so typing it
costs nothing at run time. Two versions, named by each record's ``schema`` field (the topic's
name stays ``clm.lifecycle.v1``: it names the stream, each record names its shape):

* ``clm.lifecycle.v1``: ``event``, ``time``, ``identity_merge``, ``erasure``,
  ``customer_merge`` and ``correction``;
* ``clm.lifecycle.v2``: the same kinds but ``correction``, each with an optional ``restated``
  flag, and ``restatement`` (what was counted for some profiles, taken back, and what counts
  now).

The shared kinds have one type for both versions: a v1 record is a v2 record whose
``restated`` is absent (false). :func:`decode` checks only what is cheap (the schema, the kind,
the kind's required keys); times and money stay text as on the wire (:func:`as_datetime`,
:func:`as_decimal` read them). Events inside records are the event contract's JSON
(:mod:`clm_domain.events`), typed by their common fields only (:class:`EventDoc`).
"""

# No ``from __future__ import annotations``: the TypedDicts' required keys (which decode
# checks) are known at run time only from evaluated annotations.
import argparse
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NotRequired, cast, get_args, get_type_hints

import orjson
from pydantic import ConfigDict, Field, TypeAdapter, WithJsonSchema, with_config
from typing_extensions import TypedDict

from clm_domain.lifecycle import Stage

SCHEMA_V1: Final = "clm.lifecycle.v1"
SCHEMA_V2: Final = "clm.lifecycle.v2"
#: The record shapes a consumer must read, oldest first.
SCHEMAS: Final = (SCHEMA_V1, SCHEMA_V2)
SchemaName = Literal["clm.lifecycle.v1", "clm.lifecycle.v2"]

#: A time: ISO 8601 text with its offset on the wire (what :func:`decode` gives); a producer
#: may hand :func:`encode` an aware ``datetime``, which it writes as that text.
Timestamp = Annotated[datetime | str, WithJsonSchema({"type": "string", "format": "date-time"})]
#: An amount: decimal text on the wire (``"59.90"``); a producer may hand :func:`encode` a
#: ``Decimal``, which it writes as that text.
Money = Annotated[
    Decimal | str, WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"})
]
#: A lifecycle stage (:class:`clm_domain.lifecycle.Stage`; a ``Stage`` member is one).
StageName = Annotated[str, WithJsonSchema({"type": "string", "enum": [s.value for s in Stage]})]

_DOCUMENTED = ConfigDict(use_attribute_docstrings=True)

Move = TypedDict(
    "Move",
    {"from": StageName | None, "to": StageName, "at": Timestamp, "reason": str},
)
Move.__doc__ = """One stage move: ``from`` is null for a customer's first stage; ``at`` is when it
became due (an inactivity move: when the threshold was crossed, not when it was noticed)."""


@with_config(_DOCUMENTED)
class Facts(TypedDict):
    """The customer's facts after the record's event or move (the stage engine's
    ``CustomerState`` without its bookkeeping fields)."""

    customer_id: str
    stage: StageName
    stage_entered_at: Timestamp
    first_seen_at: Timestamp
    last_seen_at: Timestamp
    first_source: str
    """First touch: the source of the customer's earliest event."""
    first_channel: str | None
    first_campaign: str | None
    acquired_at: Timestamp | None
    """When the customer became a lead (entered ``acquisition``)."""
    converted_at: Timestamp | None
    """When the customer first purchased."""
    last_purchase_at: Timestamp | None
    purchases: int
    revenue: Money
    refunds: int
    refunded: Money
    tickets_opened: int
    tickets_solved: int
    reviews: int
    review_sum: int
    last_nps: int | None
    referrals: int
    reactivations: int
    events: int


@with_config(_DOCUMENTED)
class EventDoc(TypedDict):
    """The event as ingested: the event contract's JSON (``clm_domain.events``; absent
    optional fields are left out). Only the fields every event has are typed here."""

    event_id: str
    type: str
    occurred_at: Timestamp
    source: str
    channel: NotRequired[str]
    customer_id: NotRequired[str]
    anonymous_id: NotRequired[str]
    properties: dict[str, Any]
    """Per ``type``, as the event contract defines them."""


@with_config(_DOCUMENTED)
class EventRecord(TypedDict):
    """One applied event: the event, the customer's facts after it, its stage moves and
    flags. ``record_id`` is ``<source>:<event_id>``."""

    schema: SchemaName
    kind: Literal["event"]
    record_id: str
    """Stable: a relay retry repeats it; consumers dedupe by it."""
    event: EventDoc
    customer: Facts | None
    """Null when the event has no customer (``marketing_spend``)."""
    stage_before: StageName | None
    """Null for a customer's first event."""
    stage_after: StageName | None
    stage_before_entered_at: Timestamp | None
    transition: Move | None
    """The last of ``transitions``."""
    transitions: list[Move]
    """Every move the event caused, oldest first (inactivity moves that became due before
    it, then its own)."""
    first_purchase: bool
    """The event is the customer's first purchase."""
    repeat_purchase: bool
    """The event is a purchase after the first."""
    reactivation: bool
    """The event brought the customer back from ``at_risk`` or ``churned``."""
    restated: NotRequired[bool]
    """(v2) This record's customer part is already inside a ``restatement`` with the same
    cause: count only its event part. Absent: false."""


@with_config(_DOCUMENTED)
class TimeRecord(TypedDict):
    """The sweeper's inactivity moves of one customer. ``record_id`` is
    ``time:<customer_id>:<the last move's time>``."""

    schema: SchemaName
    kind: Literal["time"]
    record_id: str
    customer_id: str
    event: None
    customer: Facts
    stage_before: StageName
    stage_before_entered_at: Timestamp
    stage_after: StageName
    transition: Move
    transitions: list[Move]
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool
    restated: NotRequired[bool]
    """(v2) Its moves are already inside a ``restatement``: count nothing of it."""


@with_config(_DOCUMENTED)
class IdentityMergeRecord(TypedDict):
    """A profile merged away (an anonymous profile linked to a customer, or the loser of an
    explicit merge) leaves its stage. ``record_id`` is ``identity_merge:<from>><into>``."""

    schema: SchemaName
    kind: Literal["identity_merge"]
    record_id: str
    customer_id: str
    """The profile merged away."""
    merged_into: str
    """The survivor."""
    event: None
    customer: None
    stage_before: StageName | None
    stage_after: None
    transition: None
    at: Timestamp
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool
    restated: NotRequired[bool]
    """(v2) Its stage and customer part are already inside a ``restatement``: count only
    the profile leaving (its distinct-set members and tickets move to ``merged_into``)."""


@with_config(_DOCUMENTED)
class ErasureRecord(TypedDict):
    """A customer erased (``mode: erase``: it leaves its stage) or anonymised (``mode:
    anonymise``: it stays, under ``pseudonym``). ``record_id`` is ``erasure:<digest>``."""

    schema: SchemaName
    kind: Literal["erasure"]
    record_id: str
    customer_id: str
    mode: Literal["erase", "anonymise"]
    pseudonym: str | None
    """The customer's new id when anonymised; null when erased."""
    event: None
    customer: None
    stage_before: StageName | None
    stage_after: StageName | None
    """Null when erased; the unchanged stage when anonymised."""
    transition: None
    at: Timestamp
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool
    restated: NotRequired[bool]
    """(v2) Its stage and customer part are already inside a ``restatement``: count only
    the profile leaving (its distinct-set members and tickets go)."""


@with_config(_DOCUMENTED)
class CustomerMergeRecord(TypedDict):
    """The survivor of an explicit merge of two known customers, rebuilt from both profiles'
    events. ``record_id`` is ``customer_merge:<merged>><customer_id>``."""

    schema: SchemaName
    kind: Literal["customer_merge"]
    record_id: str
    customer_id: str
    """The survivor."""
    merged: str
    """The customer merged away (its own ``identity_merge`` record takes it out)."""
    event: None
    customer: Facts
    stage_before: StageName
    stage_after: StageName
    stage_before_entered_at: Timestamp
    transition: Move | None
    transitions: list[Move]
    at: Timestamp
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool
    restated: NotRequired[bool]
    """(v2) Its move is already inside a ``restatement``: count nothing of it."""


@with_config(_DOCUMENTED)
class CorrectedEvent(TypedDict):
    """What was published for an event before a correction."""

    event: EventDoc
    customer: Facts
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool


@with_config(_DOCUMENTED)
class CorrectionRecord(TypedDict):
    """(v1 only) A late event or a merge changed the flags of an event published before: the
    flags and facts now at the top level, what was published under ``corrected``.
    ``record_id`` is ``correction:<source>:<event_id>@<cause>``."""

    schema: Literal["clm.lifecycle.v1"]
    kind: Literal["correction"]
    record_id: str
    customer_id: str
    reason: Literal["late event", "identity merge", "customer merge"]
    event: None
    customer: Facts
    stage_before: None
    stage_after: None
    transition: None
    transitions: list[Move]
    corrected: CorrectedEvent
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool


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


@with_config(_DOCUMENTED)
class SlimProperties(TypedDict, total=False):
    """An event's properties, only those counting reads (absent when the event has none)."""

    amount: Money
    currency: str
    status: str
    csat: int
    rating: int
    score: int
    ticket_id: str


@with_config(_DOCUMENTED)
class SlimEvent(TypedDict):
    """An event in a timeline: its envelope and :class:`SlimProperties` (see
    :func:`slim_event`)."""

    event_id: str
    type: str
    occurred_at: Timestamp
    source: str
    channel: NotRequired[str | None]
    customer_id: NotRequired[str | None]
    anonymous_id: NotRequired[str | None]
    properties: SlimProperties


@with_config(_DOCUMENTED)
class TimelineItem(TypedDict):
    """One step of a profile's timeline: an ``event`` record's body (its event slimmed), or
    the sweep item (``event`` null: the inactivity moves up to the sweeper's time)."""

    event: SlimEvent | None
    customer: Facts
    """The facts after the item."""
    stage_before: StageName | None
    stage_before_entered_at: Timestamp | None
    transitions: list[Move]
    first_purchase: bool
    repeat_purchase: bool
    reactivation: bool


@with_config(_DOCUMENTED)
class ProfileTimeline(TypedDict):
    """A profile's timeline (or a chunk of it), as counted under ``customer_id``."""

    customer_id: str
    """The profile id the items were counted under."""
    stage: StageName | None
    """Its final stage; null in continuation parts (the stage counts once)."""
    items: list[TimelineItem]
    """In event-time order, then at most one sweep item."""


@with_config(_DOCUMENTED)
class RestatementRecord(TypedDict):
    """(v2 only) What was counted for some profiles, to take back (``retract``), and what
    counts now (``add``), at the items' original times. ``record_id`` is
    ``restatement:<customer_id>@<cause>#<part>``; the parts of one cause are independent."""

    schema: Literal["clm.lifecycle.v2"]
    kind: Literal["restatement"]
    record_id: str
    customer_id: str
    """The survivor, or the erased customer."""
    reason: Literal["late event", "identity merge", "customer merge", "erasure"]
    cause: str
    """``<source>:<event_id>`` (a late event), ``merge:<from>><into>`` or
    ``erasure:<digest>``."""
    part: int
    parts: int
    events_too: bool
    """True for an erasure: retract the items' event part as well."""
    retract: list[ProfileTimeline]
    add: list[ProfileTimeline]
    event: None
    at: Timestamp
    """When the engine restated."""


LifecycleRecordV1 = (
    EventRecord
    | TimeRecord
    | IdentityMergeRecord
    | ErasureRecord
    | CustomerMergeRecord
    | CorrectionRecord
)
LifecycleRecordV2 = (
    EventRecord
    | TimeRecord
    | IdentityMergeRecord
    | ErasureRecord
    | CustomerMergeRecord
    | RestatementRecord
)
#: Any record a consumer may read (narrow it on ``record["kind"]``).
LifecycleRecord = LifecycleRecordV1 | RestatementRecord

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
    if type(doc) is not dict:
        raise BadRecord("record", f"not a JSON object but {type(doc).__name__}")
    # the first v1 engines wrote event records without a kind
    schema, kind = doc.get("schema"), doc.get("kind", "event" if "kind" not in doc else None)
    kinds = REQUIRED_KEYS.get(schema) if type(schema) is str else None
    if kinds is None:
        raise BadRecord("schema", f"{schema!r} is not one of {', '.join(SCHEMAS)}")
    if type(kind) is not str or kind not in kinds:
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


# -- JSON Schema ---------------------------------------------------------------------------


def record_adapter(schema: str) -> TypeAdapter[Any]:
    """A pydantic validator of one record version (the schema's source; tests use it too)."""
    if schema == SCHEMA_V1:
        return TypeAdapter(Annotated[LifecycleRecordV1, Field(discriminator="kind")])
    return TypeAdapter(Annotated[LifecycleRecordV2, Field(discriminator="kind")])


def json_schema(schema: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record version, from the types: the version's
    kinds, its ``schema`` value as a constant and (v1) without the v2-only ``restated``."""
    doc = record_adapter(schema).json_schema()
    for definition in doc["$defs"].values():
        properties = definition.get("properties", {})
        if "schema" in properties and "kind" in properties:
            properties["schema"] = {"const": schema, "type": "string"}
            if schema == SCHEMA_V1:
                properties.pop("restated", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": schema,
        "description": (
            f"A record of the CLM Stream lifecycle stream whose `schema` is {schema} "
            "(generated from clm_domain.lifecycle_records; see docs/lifecycle-records.md)."
        ),
        **doc,
    }


def schema_files() -> dict[str, str]:
    """File name → text of every version's JSON Schema, as committed in ``deploy/schemas``."""
    return {
        f"{schema}.schema.json": json.dumps(json_schema(schema), indent=2) + "\n"
        for schema in SCHEMAS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clm_domain.lifecycle_records")
    parser.add_argument(
        "--schema",
        metavar="DIR",
        nargs="?",
        const="deploy/schemas",
        required=True,
        help="write the JSON Schemas of every record version into DIR (deploy/schemas)",
    )
    args = parser.parse_args(argv)
    out = Path(args.schema)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
