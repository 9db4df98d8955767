"""Webhook payloads in the providers' real shapes (trimmed to the fields that matter), the test
secrets they are signed with, and Shopify's signed headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from clm_infra.db import create_engine
from clm_infra.settings import CommonSettings
from clm_infra.webhook_secrets import Provider, cipher, store_secret

SHOPIFY_ORDER: dict[str, Any] = {
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "email": "jon@example.com",
    "created_at": "2026-11-23T06:15:42-05:00",
    "currency": "USD",
    "total_price": "403.00",
    "subtotal_price": "393.00",
    "financial_status": "paid",
    "order_number": 1234,
    "customer": {"id": 115310627314723954, "email": "john@example.com"},
    "line_items": [
        {
            "id": 866550311766439020,
            "sku": "IPOD-342-N",
            "title": "IPod Nano",
            "quantity": 1,
            "price": "199.00",
        },
        {
            "id": 141249953214522974,
            "sku": "IPOD-342-R",
            "title": "IPod Nano",
            "quantity": 1,
            "price": "194.00",
        },
    ],
}

SHOPIFY_REFUND: dict[str, Any] = {
    "id": 890088186047892319,
    "order_id": 820982911946154508,
    "created_at": "2026-11-23T07:00:00-05:00",
    "note": "Things were damaged",
    "restock": False,
    "transactions": [
        {"id": 1, "amount": "10.00", "currency": "USD", "kind": "refund", "status": "success"},
        {"id": 2, "amount": "2.50", "currency": "USD", "kind": "refund", "status": "success"},
        {"id": 3, "amount": "99.00", "currency": "USD", "kind": "refund", "status": "failure"},
    ],
}


def stripe_event(
    type_: str, obj: dict[str, Any], *, id_: str = "evt_1NG8Du2eZvKYlo2CUI79vXWy"
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1795431600,  # 2026-11-23T11:00:00Z
        "livemode": False,
        "pending_webhooks": 1,
        "type": type_,
        "data": {"object": obj},
    }


STRIPE_CHARGE: dict[str, Any] = {
    "id": "ch_3MmlLrLkdIwHu7ix0snN0B15",
    "object": "charge",
    "amount": 1099,
    "amount_refunded": 0,
    "currency": "eur",
    "customer": "cus_NffrFeUfNV2Hib",
    "invoice": None,
    "paid": True,
    "status": "succeeded",
}
STRIPE_INVOICE: dict[str, Any] = {
    "id": "in_1MtHbELkdIwHu7ixl4OzzPMv",
    "object": "invoice",
    "amount_paid": 1500,
    "currency": "usd",
    "customer": "cus_NeZwdNtLEOXuvB",
    "subscription": "sub_1MowQVLkdIwHu7ixeRlqHVzs",
    "status": "paid",
}
STRIPE_SUBSCRIPTION: dict[str, Any] = {
    "id": "sub_1MowQVLkdIwHu7ixeRlqHVzs",
    "object": "subscription",
    "customer": "cus_NeZwdNtLEOXuvB",
    "status": "canceled",
    "cancellation_details": {
        "comment": None,
        "feedback": "too_expensive",
        "reason": "cancellation_requested",
    },
}

ZENDESK_CREATED: dict[str, Any] = {
    "account_id": 22129848,
    "detail": {
        "id": "5158",
        "requester_id": "8447388090494",
        "status": "NEW",
        "subject": "Where is my order?",
        "created_at": "2026-11-23T09:00:00Z",
    },
    "event": {},
    "id": "cbe4028c-7239-495d-b020-f22348516046",
    "subject": "zen:ticket:5158",
    "time": "2026-11-23T09:00:00.000000Z",
    "type": "zen:event-type:ticket.created",
    "zendesk_event_version": "2022-11-06",
}
ZENDESK_SOLVED: dict[str, Any] = {
    **ZENDESK_CREATED,
    "id": "d2f2d1c0-2d8e-4c59-b6f3-6a3b0c3b0d9e",
    "type": "zen:event-type:ticket.status_changed",
    "event": {"current": "SOLVED", "previous": "OPEN"},
}
# the body of a trigger webhook as docs/api.md gives it (Zendesk placeholders filled in)
ZENDESK_TRIGGER: dict[str, Any] = {
    "ticket_id": "5158",
    "status": "Solved",
    "requester_id": "8447388090494",
    "requester_external_id": "cust-42",
    "satisfaction": "Good",
    "updated_at": "2026-11-23T10:00:00Z",
}


SECRETS: dict[Provider, bytes] = {
    "shopify": b"shpss_shop-eu-secret",
    "stripe": b"whsec_stripe-secret",
    "zendesk": b"zendesk-secret",
    "generic": b"clmwh_reviews-secret",
}


async def store_secrets(settings: CommonSettings) -> None:
    """Store SECRETS for source shop-eu (and one Shopify secret of shop-us) in the database."""
    engine = create_engine(settings.database.url, pool_size=1)
    async with engine.begin() as conn:
        for provider, secret in SECRETS.items():
            await store_secret(
                conn, cipher(settings), source="shop-eu", provider=provider, secret=secret.decode()
            )
        # another source's Shopify secret: the matching one decides the source
        await store_secret(
            conn, cipher(settings), source="shop-us", provider="shopify", secret="shpss_us"
        )
    await engine.dispose()


def shopify_headers(body: bytes, secret: bytes, *, delivery: str = "wh-1") -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()
    return {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": delivery,
        "X-Shopify-Shop-Domain": "shop-eu.myshopify.com",
        "Content-Type": "application/json",
    }
