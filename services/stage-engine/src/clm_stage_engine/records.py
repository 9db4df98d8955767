"""The records published on ``clm.lifecycle.v1`` (the stream; one per applied event and a few
more), pure. Each record names its shape in ``schema``; this engine writes ``clm.lifecycle.v2``
(``docs/lifecycle-records.md`` has the contract, the JSON Schema is under ``deploy/schemas/``).

Kinds: ``event`` (one per applied event: the event, the customer's facts after it, its stage
before and after, every move it caused, its first-purchase / repeat-purchase / reactivation
flags), ``time`` (the sweeper's inactivity moves), ``identity_merge`` and ``erasure`` (a
profile leaving: merged into another, or erased), ``customer_merge`` (the survivor of an
explicit merge) and ``restatement``.

A ``restatement`` says what to take back and what to add when a customer's past changed (a
late event, an identity merge, an explicit merge, an erasure): ``retract`` holds the
timelines counted before (one per profile, each item the body of an event record or a sweep,
as the events were folded then), ``add`` the timeline now. Records whose customer part such a
restatement carries say ``restated: true``: a consumer counts only their event part (the
event's own figures) or, for a profile leaving, the profile's id leaving the distinct sets.
``correction`` records (v1) are no longer written: a restatement covers what they fixed.

``record_id`` is stable, so consumers dedupe relay retries by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal, cast

import orjson

from clm_domain.events import Event, dump_event
from clm_domain.lifecycle import Applied, CustomerState, Transition
from clm_domain.lifecycle_records import (
    SCHEMA_V2,
    CustomerMergeRecord,
    EventRecord,
    Facts,
    Move,
    ProfileTimeline,
    RestatementRecord,
    SlimEvent,
    SlimProperties,
    TimelineItem,
    encode,
    event_json,
)

SCHEMA: Final = SCHEMA_V2
#: Items per restatement record: a long history goes out in several parts, none of them large.
RESTATEMENT_ITEMS = 500


def record_id(event: Event) -> str:
    return f"{event.source}:{event.event_id}"


#: The reducer's bookkeeping: kept in the customer's row, never shown.
BOOKKEEPING_FIELDS = ("last_event_source", "last_event_id", "recent_visits", "recent_purchases")
#: Facts the read API shows that records do not carry (yet): the purchase-day facts the
#: predictive models read. Adding them to records is a change of the record contract.
UNPUBLISHED_FACTS = ("purchase_days", "repeat_spend", "purchase_currency")
#: The facts a record carries.
FACT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(CustomerState) if f.name not in {*BOOKKEEPING_FIELDS, *UNPUBLISHED_FACTS}
)


#: (first purchase, repeat purchase, reactivation): what a record says about its event.
Flags = tuple[bool, bool, bool]


def flags_of(applied: Applied) -> Flags:
    return (applied.first_purchase, applied.repeat_purchase, applied.reactivation)


def customer_facts(state: CustomerState) -> Facts:
    """The facts as records carry them, in field order: money as decimal strings (written here
    rather than by a ``default`` hook orjson would call back into Python for)."""
    facts = {name: getattr(state, name) for name in FACT_FIELDS}
    facts["revenue"] = format(state.revenue, "f")
    facts["refunded"] = format(state.refunded, "f")
    return cast(Facts, facts)


def lifecycle_record(
    event: Event,
    before: CustomerState | None,
    applied: Applied | None,
    *,
    wire: bytes | None = None,
    restated: bool = False,
) -> bytes:
    """Serialize the record for one applied event (``applied`` is None without a customer);
    ``wire``: the event's JSON, when the caller has it already (as it came from Kafka);
    ``restated``: its customer part goes out in a restatement (a rebuild's events)."""
    moves = [move_doc(t) for t in applied.transitions] if applied else []
    record: EventRecord = {
        "schema": SCHEMA,
        "kind": "event",
        "record_id": record_id(event),
        "event": event_json(dump_event(event) if wire is None else wire),
        "customer": None if applied is None else customer_facts(applied.state),
        "stage_before": before.stage if before else None,  # a StrEnum: orjson writes it
        "stage_after": None if applied is None else applied.state.stage,
        "stage_before_entered_at": before.stage_entered_at if before else None,
        "transition": moves[-1] if moves else None,
        "transitions": moves,
        "first_purchase": applied is not None and applied.first_purchase,
        "repeat_purchase": applied is not None and applied.repeat_purchase,
        "reactivation": applied is not None and applied.reactivation,
        "restated": restated,
    }
    return encode(record)


def move_doc(t: Transition) -> Move:
    """One move as records carry it (event records and the sweeper's ``time`` records)."""
    return {
        "from": t.from_stage,  # StrEnum or None: orjson writes the value
        "to": t.to_stage,
        "at": t.at,
        "reason": t.reason,
    }


def merge_record(
    into: str,
    merged: str,
    before: CustomerState,
    after: CustomerState,
    move: Transition | None,
    at: datetime,
) -> bytes:
    """The survivor's record of an explicit merge (``merged`` folded into ``into``): its
    stage before and after, its facts now and the move (None: the stage did not change).
    Informative: the merge's restatement carries what it changes in the counts."""
    moves = [move_doc(move)] if move is not None else []
    record: CustomerMergeRecord = {
        "schema": SCHEMA,
        "kind": "customer_merge",
        "record_id": f"customer_merge:{merged}>{into}",
        "customer_id": into,
        "merged": merged,
        "event": None,
        "customer": customer_facts(after),
        "stage_before": before.stage,
        "stage_before_entered_at": before.stage_entered_at,
        "stage_after": after.stage,
        "transition": moves[-1] if moves else None,
        "transitions": moves,
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
        "at": at,
        "restated": True,
    }
    return encode(record)


def removal_record(
    kind: str, record_key: str, customer_id: str, stage: str | None, **extra: Any
) -> bytes:
    """A record saying a profile left its stage: ``identity_merge`` or ``erasure`` (with
    ``restated=True`` when a restatement takes its timeline back)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": kind,
        "record_id": f"{kind}:{record_key}",
        "customer_id": customer_id,
        "event": None,
        "customer": None,
        "stage_before": stage,
        "stage_after": None,
        "transition": None,
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
        "at": datetime.now(UTC),
        "restated": False,
        **extra,
    }
    return orjson.dumps(doc, default=_default)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(type(value).__name__)


#: Why a customer's past was restated.
Reason = Literal["late event", "identity merge", "customer merge", "erasure"]

#: The event properties a timeline item keeps: what the figures are computed from (the rest of
#: an event, personal data included, stays out of restatements).
_COUNTED_PROPERTIES = ("amount", "currency", "status", "csat", "rating", "score", "ticket_id")


def event_view(event: Event) -> SlimEvent:
    """An event as timeline items carry it: its identity, time, origin and counted values."""
    props = getattr(event, "properties", None)
    kept = {} if props is None else props.model_dump(mode="json", include=set(_COUNTED_PROPERTIES))
    return {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "source": event.source,
        "channel": event.channel,
        "customer_id": event.customer_id,
        "anonymous_id": event.anonymous_id,
        "properties": cast(SlimProperties, kept),
    }


def timeline_item(event: Event, before: CustomerState | None, applied: Applied) -> TimelineItem:
    """One event's place in a customer's timeline: an event record's body, the event slimmed."""
    moves = [move_doc(t) for t in applied.transitions]
    return {
        "event": event_view(event),
        "customer": customer_facts(applied.state),
        "stage_before": before.stage if before else None,
        "stage_before_entered_at": before.stage_entered_at if before else None,
        "transitions": moves,
        "first_purchase": applied.first_purchase,
        "repeat_purchase": applied.repeat_purchase,
        "reactivation": applied.reactivation,
    }


def sweep_item(
    before: CustomerState, after: CustomerState, moves: Sequence[Transition]
) -> TimelineItem:
    """The inactivity moves at a timeline's end (what the sweeper's ``time`` records say)."""
    return {
        "event": None,
        "customer": customer_facts(after),
        "stage_before": before.stage,
        "stage_before_entered_at": before.stage_entered_at,
        "transitions": [move_doc(t) for t in moves],
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
    }


@dataclass(frozen=True, slots=True)
class Timeline:
    """A profile's figures as counted: its id, its final state and one item per event (then
    its inactivity moves)."""

    customer_id: str
    state: CustomerState | None
    items: tuple[TimelineItem, ...]


def restatement_records(
    customer_id: str,
    *,
    cause: str,
    reason: Reason,
    retract: Sequence[Timeline],
    add: Sequence[Timeline],
    at: datetime,
    events_too: bool = False,
) -> list[bytes]:
    """The ``restatement`` record(s) taking ``retract`` back and adding ``add``, in parts of at
    most :data:`RESTATEMENT_ITEMS` items (a profile's stage goes with its first part)."""
    parts = _restatement_parts(retract, add)
    records: list[RestatementRecord] = [
        {
            "schema": SCHEMA,
            "kind": "restatement",
            "record_id": f"restatement:{customer_id}@{cause}#{n}",
            "customer_id": customer_id,
            "reason": reason,
            "cause": cause,
            "part": n,
            "parts": len(parts),
            "events_too": events_too,
            "retract": part["retract"],
            "add": part["add"],
            "event": None,
            "at": at,
        }
        for n, part in enumerate(parts)
    ]
    return [encode(r) for r in records]


def _restatement_parts(
    retract: Sequence[Timeline], add: Sequence[Timeline]
) -> list[dict[str, list[ProfileTimeline]]]:
    """The timelines cut in pieces of at most :data:`RESTATEMENT_ITEMS` items, the pieces
    packed in order into parts of at most that many items."""
    pieces: list[tuple[str, str, str | None, list[TimelineItem]]] = []
    for side, timelines in (("retract", retract), ("add", add)):
        for t in timelines:
            stage = None if t.state is None else t.state.stage.value
            items = list(t.items)
            for n in range(0, max(len(items), 1), RESTATEMENT_ITEMS):
                pieces.append(
                    (
                        side,
                        t.customer_id,
                        stage if n == 0 else None,
                        items[n : n + RESTATEMENT_ITEMS],
                    )
                )
    parts: list[dict[str, list[ProfileTimeline]]] = [{"retract": [], "add": []}]
    size = 0
    for side, who, stage, items in pieces:
        if size and size + len(items) > RESTATEMENT_ITEMS:
            parts.append({"retract": [], "add": []})
            size = 0
        parts[-1][side].append({"customer_id": who, "stage": stage, "items": items})
        size += len(items)
    return parts
