"""The lifecycle record types: one ``TypedDict`` a kind of record on ``clm.lifecycle.v1``, in
its two versions (``clm.lifecycle.v1`` and ``clm.lifecycle.v2``, named by each record's
``schema`` field). ``docs/lifecycle-records.md`` explains each kind and how to count it; the
JSON Schemas in ``deploy/schemas/`` are generated from these types
(:mod:`clm_domain.record_schema`).

A record is the plain ``dict`` ``orjson`` gives, so typing it costs nothing at run time. The
shared kinds have one type for both versions: a v1 record is a v2 record whose ``restated`` is
absent (false). Events inside records are the event contract's JSON (:mod:`clm_domain.events`),
typed by their common fields only (:class:`EventDoc`).
"""

# No ``from __future__ import annotations``: the TypedDicts' required keys (which the codec
# checks) are known at run time only from evaluated annotations.
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, NotRequired

from pydantic import ConfigDict, WithJsonSchema, with_config
from typing_extensions import TypedDict

from clm_domain.stages import Stage

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
