"""The lifecycle record published on ``clm.lifecycle.v1`` (one per applied event), pure.

Versioned schema ``clm.lifecycle.v1``::

    {"schema": "clm.lifecycle.v1", "kind": "event", "record_id": "<source>:<event_id>",
     "event": {...the event as ingested...},
     "customer": {...facts after the event...} | null,   (null for marketing_spend)
     "stage_before": "reach" | null, "stage_after": "conversion" | null,
     "stage_before_entered_at": "<when the customer entered stage_before>" | null,
     "transition": {"from", "to", "at", "reason"} | null,   (the last move)
     "transitions": [{"from", "to", "at", "reason"}, ...],   (every move, oldest first)
     "first_purchase": bool, "repeat_purchase": bool, "reactivation": bool}

One event can cause several moves (a purchase after months of silence: at-risk and churned at
the times they became due, then reactivated); consumers count each move at its own time.

``record_id`` is stable, so consumers dedupe relay retries by it.

Two more kinds carry no event (``"event": null``) and take a customer out of its stage:
``identity_merge`` (an anonymous profile folded into a customer; ``merged_into`` names it) and
``erasure`` (a customer erased on request). Both have ``stage_after: null`` and
``customer_id``.

``customer_merge`` (``"event": null``): the survivor of an explicit merge of two known
customers (``POST /v1/customers/{id}/merge``), rebuilt from both profiles' events; it carries
the survivor's ``stage_before`` / ``stage_after`` (equal when the merge did not move it), its
facts after the merge, ``merged`` (the id merged away, whose own ``identity_merge`` record
takes that profile out of its stage), ``at`` and the move in ``transitions``. Consumers that
count customers per stage apply it like any other ``stage_before`` → ``stage_after``.

``correction`` (also ``"event": null``, no stage change): a late event or an identity merge
changed the flags of an event published before (a late first purchase makes the purchase that
was "first" a repeat). It carries the event's new flags and facts at the top level and what
was published under ``corrected``; a consumer that counts flags takes the old ones back and
adds the new ones::

    {"schema": "clm.lifecycle.v1", "kind": "correction",
     "record_id": "correction:<source>:<event_id>@<cause>",  (cause: the late event's
                    record id, or merge:<from>><into> for an explicit merge of two customers)
     "customer_id": "...", "event": null,
     "reason": "late event" | "identity merge" | "customer merge",
     "customer": {...facts after the event, now...},
     "first_purchase": bool, "repeat_purchase": bool, "reactivation": bool,
     "corrected": {"event": {...the event...}, "customer": {...facts after it, as published...},
                   "first_purchase": bool, "repeat_purchase": bool, "reactivation": bool},
     "stage_before": null, "stage_after": null, "transition": null, "transitions": []}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import orjson

from clm_common.events import Event, dump_event
from clm_common.lifecycle import Applied, CustomerState, Transition

SCHEMA = "clm.lifecycle.v1"


def record_id(event: Event) -> str:
    return f"{event.source}:{event.event_id}"


#: The facts a record carries (the reducer's bookkeeping fields stay inside).
FACT_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in fields(CustomerState)
    if f.name not in {"last_event_source", "last_event_id", "recent_visits", "recent_purchases"}
)


#: (first purchase, repeat purchase, reactivation): what a record says about its event.
Flags = tuple[bool, bool, bool]


def flags_of(applied: Applied) -> Flags:
    return (applied.first_purchase, applied.repeat_purchase, applied.reactivation)


def correction_record(
    customer_id: str,
    event: Event,
    old: Flags,
    old_state: CustomerState,
    new: Flags,
    state: CustomerState,
    *,
    cause: str,
    reason: str,
) -> bytes:
    """The record correcting ``event``'s published flags (``old``, with the facts after it
    then) to ``new`` (``state``: the facts after it now); its id names the event and the one
    whose arrival caused the rebuild, so a relay retry repeats it and another rebuild makes a
    new one."""
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "kind": "correction",
            "record_id": f"correction:{record_id(event)}@{cause}",
            "customer_id": customer_id,
            "reason": reason,
            "event": None,
            "customer": customer_facts(state),
            "stage_before": None,
            "stage_after": None,
            "transition": None,
            "transitions": [],
            "first_purchase": new[0],
            "repeat_purchase": new[1],
            "reactivation": new[2],
            "corrected": {
                "event": orjson.Fragment(dump_event(event)),
                "customer": customer_facts(old_state),
                "first_purchase": old[0],
                "repeat_purchase": old[1],
                "reactivation": old[2],
            },
        }
    )


_MONEY = ("revenue", "refunded")


def _facts_maker() -> Callable[[CustomerState], dict[str, Any]]:
    """``customer_facts``, built from source once: one dict display of the fields, half the
    cost of zipping names and values into a dict (it runs for every record)."""
    items = ", ".join(
        f"{name!r}: _format(s.{name}, 'f')" if name in _MONEY else f"{name!r}: s.{name}"
        for name in FACT_FIELDS
    )
    namespace: dict[str, Any] = {"_format": format}
    exec(f"def customer_facts(s):\n    return {{{items}}}", namespace)  # noqa: S102 - field names
    return cast(Callable[[CustomerState], dict[str, Any]], namespace["customer_facts"])


#: The facts as records carry them, in field order: money as decimal strings (written here
#: rather than by a ``default`` hook orjson would call back into Python for).
customer_facts = _facts_maker()


def lifecycle_record(
    event: Event,
    before: CustomerState | None,
    applied: Applied | None,
    *,
    wire: bytes | None = None,
) -> bytes:
    """Serialize the record for one applied event (``applied`` is None without a customer);
    ``wire``: the event's JSON, when the caller has it already (as it came from Kafka)."""
    moves = [move_doc(t) for t in applied.transitions] if applied else []
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "kind": "event",
            "record_id": record_id(event),
            "event": orjson.Fragment(dump_event(event) if wire is None else wire),
            "customer": None if applied is None else customer_facts(applied.state),
            "stage_before": before.stage if before else None,  # a StrEnum: orjson writes it
            "stage_after": None if applied is None else applied.state.stage,
            "stage_before_entered_at": before.stage_entered_at if before else None,
            "transition": moves[-1] if moves else None,
            "transitions": moves,
            "first_purchase": applied is not None and applied.first_purchase,
            "repeat_purchase": applied is not None and applied.repeat_purchase,
            "reactivation": applied is not None and applied.reactivation,
        }
    )


def move_doc(t: Transition) -> dict[str, Any]:
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
    stage before and after, its facts now and the move (None: the stage did not change)."""
    moves = [move_doc(move)] if move is not None else []
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "kind": "customer_merge",
            "record_id": f"customer_merge:{merged}>{into}",
            "customer_id": into,
            "merged": merged,
            "event": None,
            "customer": customer_facts(after),
            "stage_before": before.stage,
            "stage_after": after.stage,
            "stage_before_entered_at": before.stage_entered_at,
            "transition": moves[-1] if moves else None,
            "transitions": moves,
            "first_purchase": False,
            "repeat_purchase": False,
            "reactivation": False,
            "at": at,
        }
    )


def removal_record(
    kind: str, record_key: str, customer_id: str, stage: str | None, **extra: Any
) -> bytes:
    """A record saying a profile left its stage: ``identity_merge`` or ``erasure``."""
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
        **extra,
    }
    return orjson.dumps(doc, default=_default)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(type(value).__name__)
