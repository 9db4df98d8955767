"""Event documents for tests: valid bodies of every type, as a client would send them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

PROPERTIES: dict[str, dict[str, Any]] = {
    "ad_click": {"campaign": "black-friday", "ad": "banner-1"},
    "site_visit": {"url": "https://shop.example/", "referrer": "https://search.example/"},
    "signup": {"plan": "free"},
    "identify": {"traits": {"plan": "pro"}},
    "purchase": {"order_id": "o-1", "amount": "59.90", "currency": "EUR"},
    "refund": {"order_id": "o-1", "amount": "59.90", "currency": "EUR"},
    "subscription_cancelled": {"subscription_id": "sub-1"},
    "support_ticket": {"ticket_id": "t-1", "status": "solved", "csat": 5},
    "review": {"rating": 5, "text": "great"},
    "nps_response": {"score": 9},
    "referral": {"referred_id": "friend-1"},
    "email_engagement": {"action": "clicked", "campaign": "welcome"},
    "marketing_spend": {
        "channel": "paid_search",
        "campaign": "black-friday",
        "amount": "1000.00",
        "currency": "EUR",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-11-30T23:59:59Z",
    },
}


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
