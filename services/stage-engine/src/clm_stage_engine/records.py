"""The lifecycle record published on ``clm.lifecycle.v1`` (one per applied event), pure.

Versioned schema ``clm.lifecycle.v1``::

    {"schema": "clm.lifecycle.v1", "record_id": "<source>:<event_id>",
     "event": {...the event as ingested...},
     "customer": {...facts after the event...} | null,   (null for marketing_spend)
     "stage_before": "reach" | null, "stage_after": "conversion" | null,
     "stage_before_entered_at": "<when the customer entered stage_before>" | null,
     "transition": {"from", "to", "at", "reason"} | null,
     "first_purchase": bool, "repeat_purchase": bool, "reactivation": bool}

``record_id`` is stable, so consumers dedupe relay retries by it.
"""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal
from typing import Any

import orjson

from clm_common.events import EVENT_ADAPTER, Event
from clm_common.lifecycle import Applied, CustomerState

SCHEMA = "clm.lifecycle.v1"


def record_id(event: Event) -> str:
    return f"{event.source}:{event.event_id}"


def customer_facts(state: CustomerState) -> dict[str, Any]:
    facts = asdict(state)
    facts.pop("extra", None)
    return facts


def lifecycle_record(event: Event, before: CustomerState | None, applied: Applied | None) -> bytes:
    """Serialize the record for one applied event (``applied`` is None without a customer)."""
    transition = applied.transition if applied else None
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "record_id": record_id(event),
        "event": EVENT_ADAPTER.dump_python(event, mode="json", exclude_none=True),
        "customer": customer_facts(applied.state) if applied else None,
        "stage_before": before.stage.value if before else None,
        "stage_after": applied.state.stage.value if applied else None,
        "stage_before_entered_at": before.stage_entered_at if before else None,
        "transition": None
        if transition is None
        else {
            "from": transition.from_stage.value if transition.from_stage else None,
            "to": transition.to_stage.value,
            "at": transition.at,
            "reason": transition.reason,
        },
        "first_purchase": bool(applied and applied.first_purchase),
        "repeat_purchase": bool(applied and applied.repeat_purchase),
        "reactivation": bool(applied and applied.reactivation),
    }
    return orjson.dumps(doc, default=_default)


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(type(value).__name__)
