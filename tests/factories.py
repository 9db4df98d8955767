"""Event documents for tests: valid bodies of every type, as a client would send them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from clm_domain.events import EXAMPLE_PROPERTIES

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

PROPERTIES: dict[str, dict[str, Any]] = EXAMPLE_PROPERTIES


def event_doc(
    type_: str = "purchase",
    *,
    customer_id: str | None = "cust-1",
    event_id: str | None = None,
    occurred_at: str = "2026-11-23T11:00:00Z",
    source: str | None = "shop",
    channel: str | None = "email",
    **properties: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": event_id or str(uuid.uuid4()),
        "type": type_,
        "occurred_at": occurred_at,
        "properties": {**PROPERTIES[type_], **properties},
    }
    if customer_id is not None and type_ != "marketing_spend":
        doc["customer_id"] = customer_id
    if source is not None:
        doc["source"] = source
    if channel is not None:
        doc["channel"] = channel
    return doc
