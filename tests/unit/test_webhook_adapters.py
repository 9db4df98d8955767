"""Provider payloads → touchpoint events, in the providers' real shapes."""

from __future__ import annotations

from typing import Any

import pytest

from clm_ingest import webhooks
from clm_ingest.normalize import normalize
from clm_ingest.webhooks import PayloadInvalid
from tests.factories import NOW
from tests.webhook_payloads import (
    SHOPIFY_ORDER,
    SHOPIFY_REFUND,
    STRIPE_CHARGE,
    STRIPE_INVOICE,
    STRIPE_SUBSCRIPTION,
    ZENDESK_CREATED,
    ZENDESK_SOLVED,
    ZENDESK_TRIGGER,
    stripe_event,
)


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    """The event as published (validated by the contract)."""
    event = normalize(doc, source="shop", received_at=NOW)
    return event.model_dump(mode="json", exclude_none=True)


def test_shopify_order_is_a_purchase_keyed_by_the_order() -> None:
    (doc,) = webhooks.shopify("orders/create", SHOPIFY_ORDER)
    event = valid(doc)
    assert event["event_id"] == "shopify:order:820982911946154508"
    assert event["type"] == "purchase"
    assert event["customer_id"] == "shopify:115310627314723954"
    assert event["occurred_at"] == "2026-11-23T11:15:42Z"  # 06:15:42-05:00, kept in UTC
    assert event["properties"]["amount"] == "403.00"
    assert event["properties"]["order_id"] == "shopify:820982911946154508"
    assert len(event["properties"]["items"]) == 2


def test_shopify_event_ids_come_from_the_body_only() -> None:
    """Any body of one order is the one purchase (an update replayed as orders/create too);
    another order, or another refund object, is another event."""
    (order,) = webhooks.shopify("orders/create", SHOPIFY_ORDER)
    updated = {**SHOPIFY_ORDER, "updated_at": "2026-11-24T08:00:00-05:00", "total_price": "1.00"}
    assert webhooks.shopify("orders/create", updated)[0]["event_id"] == order["event_id"]
    other = {**SHOPIFY_ORDER, "id": 820982911946154509}
    assert webhooks.shopify("orders/create", other)[0]["event_id"] != order["event_id"]
    (refund,) = webhooks.shopify("refunds/create", SHOPIFY_REFUND)
    assert refund["event_id"] == "shopify:refund:890088186047892319"
    second = {**SHOPIFY_REFUND, "id": 890088186047892320}
    assert webhooks.shopify("refunds/create", second)[0]["event_id"] != refund["event_id"]


def test_shopify_topic_header_must_match_the_body() -> None:
    """The topic header is not signed: a refund body sent as an order (or the other way
    round) is refused, so one body can never be two events."""
    with pytest.raises(PayloadInvalid) as info:
        webhooks.shopify("orders/create", SHOPIFY_REFUND)
    assert info.value.field == "X-Shopify-Topic"
    with pytest.raises(PayloadInvalid) as info:
        webhooks.shopify("refunds/create", SHOPIFY_ORDER)
    assert info.value.field == "X-Shopify-Topic"


def test_shopify_guest_order_and_refund_are_keyed_by_the_order() -> None:
    guest = {**SHOPIFY_ORDER, "customer": None}
    (doc,) = webhooks.shopify("orders/create", guest)
    assert valid(doc)["anonymous_id"] == "shopify-order:820982911946154508"
    (refund,) = webhooks.shopify("refunds/create", SHOPIFY_REFUND)
    event = valid(refund)
    assert event["type"] == "refund"
    assert event["properties"]["amount"] == "12.50"  # the failed transaction is left out
    assert event["anonymous_id"] == "shopify-order:820982911946154508"


def test_shopify_other_topics_are_ignored_and_broken_payloads_named() -> None:
    assert webhooks.shopify("products/update", {"id": 1}) == []
    with pytest.raises(PayloadInvalid) as info:
        webhooks.shopify("orders/create", {**SHOPIFY_ORDER, "total_price": None})
    assert info.value.field == "total_price"
    with pytest.raises(PayloadInvalid, match="transactions"):
        webhooks.shopify("refunds/create", {**SHOPIFY_REFUND, "transactions": []})
    with pytest.raises(PayloadInvalid) as info:
        webhooks.shopify("refunds/create", {**SHOPIFY_REFUND, "id": None})
    assert info.value.field == "id"


def test_stripe_charge_invoice_refund_and_cancellation() -> None:
    (charge,) = webhooks.stripe(stripe_event("charge.succeeded", STRIPE_CHARGE))
    event = valid(charge)
    assert event["event_id"] == "stripe:evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert event["customer_id"] == "stripe:cus_NffrFeUfNV2Hib"
    assert event["properties"] == {
        "order_id": "stripe:ch_3MmlLrLkdIwHu7ix0snN0B15",
        "amount": "10.99",
        "currency": "EUR",
    }
    assert event["occurred_at"] == "2026-11-23T11:00:00Z"
    (invoice,) = webhooks.stripe(stripe_event("invoice.paid", STRIPE_INVOICE))
    assert valid(invoice)["properties"]["amount"] == "15.00"
    refunded = {**STRIPE_CHARGE, "amount_refunded": 500}
    (refund,) = webhooks.stripe(stripe_event("charge.refunded", refunded))
    assert valid(refund)["type"] == "refund"
    assert valid(refund)["properties"]["amount"] == "5.00"
    (cancel,) = webhooks.stripe(stripe_event("customer.subscription.deleted", STRIPE_SUBSCRIPTION))
    assert valid(cancel)["type"] == "subscription_cancelled"
    assert valid(cancel)["properties"]["reason"] == "cancellation_requested"


def test_stripe_invoice_charges_count_once_and_other_types_are_ignored() -> None:
    paid_by_invoice = {**STRIPE_CHARGE, "invoice": "in_1MtHbELkdIwHu7ixl4OzzPMv"}
    assert webhooks.stripe(stripe_event("charge.succeeded", paid_by_invoice)) == []
    assert webhooks.stripe(stripe_event("payment_intent.created", {"id": "pi_1"})) == []


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [(1099, "eur", "10.99"), (500, "JPY", "500"), (1005, "kwd", "1.005"), (0, "usd", "0.00")],
)
def test_stripe_minor_units(minor: int, currency: str, major: str) -> None:
    assert webhooks.stripe_amount(minor, currency) == major


def test_stripe_refuses_non_integer_amounts() -> None:
    with pytest.raises(PayloadInvalid):
        webhooks.stripe(stripe_event("charge.succeeded", {**STRIPE_CHARGE, "amount": "10.99"}))


def test_zendesk_event_webhooks() -> None:
    (created,) = webhooks.zendesk(ZENDESK_CREATED)
    event = valid(created)
    assert event["type"] == "support_ticket"
    assert event["properties"] == {"ticket_id": "zendesk:5158", "status": "opened"}
    assert event["customer_id"] == "zendesk:8447388090494"
    assert event["event_id"] == "zendesk:cbe4028c-7239-495d-b020-f22348516046"
    (solved,) = webhooks.zendesk(ZENDESK_SOLVED)
    assert valid(solved)["properties"]["status"] == "solved"
    pending = {**ZENDESK_SOLVED, "event": {"current": "PENDING"}}
    assert webhooks.zendesk(pending) == []


def test_zendesk_trigger_with_satisfaction_rating() -> None:
    (doc,) = webhooks.zendesk(ZENDESK_TRIGGER)
    event = valid(doc)
    assert event["customer_id"] == "cust-42"
    assert event["properties"] == {"ticket_id": "zendesk:5158", "status": "solved", "csat": 5}
    bad = webhooks.zendesk({**ZENDESK_TRIGGER, "satisfaction": "bad"})
    assert bad[0]["properties"]["csat"] == 1
    offered = webhooks.zendesk({**ZENDESK_TRIGGER, "satisfaction": "offered"})
    assert "csat" not in offered[0]["properties"]


def test_zendesk_trigger_event_id_is_the_bodys_content() -> None:
    """The same body is the same event (a retry, or a replay within the signature's window);
    a genuine change of the ticket is a new one."""
    (doc,) = webhooks.zendesk(ZENDESK_TRIGGER)
    assert doc["event_id"].startswith("zendesk:")
    assert webhooks.zendesk(dict(ZENDESK_TRIGGER))[0]["event_id"] == doc["event_id"]
    for change in (
        {"updated_at": "2026-11-24T10:00:00Z"},
        {"satisfaction": "bad"},
        {"status": "open"},
        {"ticket_id": "5159"},
    ):
        changed = webhooks.zendesk({**ZENDESK_TRIGGER, **change})
        assert changed[0]["event_id"] != doc["event_id"], change
