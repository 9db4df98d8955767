"""A valid example of each event type, as a client sends it (for the docs and tests)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from clm_domain.event_properties import EventType

EXAMPLE_PROPERTIES: dict[str, dict[str, Any]] = {
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
    "custom": {"name": "Wishlist Shared"},
    "consent": {"purpose": "marketing", "granted": False},
}


def example_event(type_: str) -> dict[str, Any]:
    """A valid request body of this type, as a client sends it (for the docs and tests); a
    fresh copy each call, so a caller may change it."""
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"clm-example:{type_}")),
        "type": type_,
        "occurred_at": "2026-11-23T10:15:00Z",
        "channel": "email",
        "properties": copy.deepcopy(EXAMPLE_PROPERTIES[type_]),
    }
    if type_ != EventType.MARKETING_SPEND:
        doc["customer_id"] = "cust-42"
    return doc
