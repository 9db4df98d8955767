"""Shop, payment and helpdesk webhook payloads → touchpoint events (pure).

Each adapter takes the provider's JSON (and the headers it needs) and returns the event bodies
of contract v1 it stands for (none for a topic we do not use: the provider still gets a 2xx, so
it does not retry). Ids are the providers' own, prefixed (``shopify:``, ``stripe:``,
``zendesk:``), so a redelivery is the same event and counts once.

Every ``event_id`` is derived from the signed body only, never from a header the signature
does not cover (``X-Shopify-Event-Id``, ``X-Zendesk-Webhook-Invocation-Id``): whoever captured
one validly signed delivery can resend it with any headers they like, and the stage engine
dedupes by ``(source, event_id)``, so a replay must name the same event to count once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

# Stripe amounts are in the currency's minor unit; most have 2 decimals, these 0 or 3.
ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


class PayloadInvalid(Exception):
    """The payload lacks what its topic needs (answered 422: the provider's data is wrong)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _need(doc: Mapping[str, Any], path: str) -> Any:
    value = _get(doc, path)
    if value is None or value == "":
        raise PayloadInvalid(path, "is required")
    return value


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


# --- Shopify ----------------------------------------------------------------------------------

SHOPIFY_TOPICS = frozenset({"orders/create", "refunds/create"})


def _shopify_kind(payload: Mapping[str, Any]) -> str:
    """What the body is, read from the body: a refund names the order it refunds
    (``order_id``) and carries ``transactions`` / ``refund_line_items``; an order does not.
    """
    if "order_id" in payload and ("transactions" in payload or "refund_line_items" in payload):
        return "refunds/create"
    return "orders/create"


def shopify(topic: str, payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``orders/create`` → purchase, ``refunds/create`` → refund.

    The ``event_id`` comes from the signed body alone (Shopify signs the body, not its
    headers):

    - a purchase is ``shopify:order:<order id>``: one order is one purchase, whatever delivery
      carried it. Not the order's ``updated_at``: a later ``orders/updated`` body of the same
      order, replayed with the topic header set to ``orders/create``, must not be a second
      purchase (we map only ``orders/create``, so an order has exactly one purchase event);
    - a refund is ``shopify:refund:<refund id>``: one refund object is one refund event (a
      second partial refund of the same order is a new refund object with its own id).

    ``X-Shopify-Topic`` is not signed either, so it only selects among the topics we map, and
    the body must be of the kind the topic says (a refund body sent as ``orders/create``, or an
    order body as ``refunds/create``, is refused): the kind is read from the body, and the
    prefix of the id (``order:`` / ``refund:``) is that kind, so no header can make one body
    count as two events.
    """
    if topic not in SHOPIFY_TOPICS:
        return []
    if _shopify_kind(payload) != topic:
        raise PayloadInvalid("X-Shopify-Topic", f"the body is not a {topic} payload")
    if topic == "orders/create":
        return [_shopify_order(payload)]
    return [_shopify_refund(payload)]


def _shopify_order(payload: Mapping[str, Any]) -> dict[str, Any]:
    order_id = _str(_need(payload, "id"))
    customer = _str(_get(payload, "customer.id"))
    doc: dict[str, Any] = {
        "event_id": f"shopify:order:{order_id}",
        "type": "purchase",
        "occurred_at": _need(payload, "created_at"),
        "properties": {
            "order_id": f"shopify:{order_id}",
            "amount": str(_need(payload, "total_price")),
            "currency": _need(payload, "currency"),
            "items": [
                {k: i.get(k) for k in ("sku", "title", "quantity", "price") if k in i}
                for i in payload.get("line_items") or []
                if isinstance(i, dict)
            ],
        },
    }
    # a guest checkout: the order itself is the best key we have
    return doc | _shopify_customer(customer, order_id)


def _shopify_refund(payload: Mapping[str, Any]) -> dict[str, Any]:
    refund_id = _str(_need(payload, "id"))
    order_id = _str(_need(payload, "order_id"))
    amount, currency = _refunded(payload)
    properties: dict[str, Any] = {"order_id": f"shopify:{order_id}", "amount": format(amount, "f")}
    if currency:
        properties["currency"] = currency
    customer = _str(_get(payload, "customer.id")) or _str(payload.get("customer_id"))
    doc = {
        "event_id": f"shopify:refund:{refund_id}",
        "type": "refund",
        "occurred_at": _need(payload, "created_at"),
        "properties": properties,
    }
    # Shopify's refund payload names the order, not the customer
    return doc | _shopify_customer(customer, order_id)


def _refunded(payload: Mapping[str, Any]) -> tuple[Decimal, Any]:
    """The amount of a refund's successful refund transactions, and their currency."""
    transactions = [
        t
        for t in payload.get("transactions") or []
        if isinstance(t, dict) and t.get("kind") == "refund" and t.get("status") != "failure"
    ]
    if not transactions:
        raise PayloadInvalid("transactions", "no refund transaction")
    try:
        amount = sum((Decimal(str(t.get("amount", "0"))) for t in transactions), Decimal(0))
    except ArithmeticError:  # not a number, or beyond Decimal's range: not a 500
        raise PayloadInvalid("transactions", "amount is not a decimal number") from None
    return amount, transactions[0].get("currency") or payload.get("currency")


def _shopify_customer(customer: str | None, order_id: str | None) -> dict[str, str]:
    """The customer's id; without a customer, the order's (as an anonymous id)."""
    if customer:
        return {"customer_id": f"shopify:{customer}"}
    return {"anonymous_id": f"shopify-order:{order_id}"}


# --- Stripe -----------------------------------------------------------------------------------


def stripe_amount(minor: Any, currency: str) -> str:
    """Stripe's integer minor units as a decimal string in the currency's major unit."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise PayloadInvalid("amount", "must be an integer amount in minor units")
    code = currency.upper()
    places = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    return format(Decimal(minor).scaleb(-places), "f")


def _stripe_customer(obj: Mapping[str, Any]) -> dict[str, str]:
    customer = obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    if customer:
        return {"customer_id": f"stripe:{customer}"}
    return {"anonymous_id": f"stripe-object:{obj.get('id')}"}


def _stripe_money(
    base: dict[str, Any], type_: str, obj: Mapping[str, Any], order: Any, amount_field: str
) -> dict[str, Any]:
    currency = str(_need(obj, "currency"))
    return {
        **base,
        "type": type_,
        "properties": {
            "order_id": f"stripe:{order}",
            "amount": stripe_amount(_need(obj, amount_field), currency),
            "currency": currency.upper(),
        },
    }


def _stripe_time(created: Any) -> str:
    """A Stripe ``created`` (unix seconds) as an ISO 8601 time."""
    if isinstance(created, bool) or not isinstance(created, int):
        raise PayloadInvalid("created", "must be a unix timestamp")
    try:
        return datetime.fromtimestamp(created, UTC).isoformat()
    except (OverflowError, OSError, ValueError):  # beyond the calendar: not a 500
        raise PayloadInvalid("created", "is not a unix timestamp in range") from None


def stripe(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``charge.succeeded`` / ``invoice.paid`` → purchase, ``charge.refunded`` → refund,
    ``customer.subscription.deleted`` → subscription_cancelled. A charge that pays an invoice
    is skipped (its ``invoice.paid`` is the purchase), so a subscription payment counts once.
    """
    kind = _need(payload, "type")
    # the Stripe event's own id, inside the signed body: a replay (within the signature's
    # tolerance; outside it the signature is refused) names the same event
    event_id = f"stripe:{_need(payload, 'id')}"
    obj = _get(payload, "data.object")
    if not isinstance(obj, dict):
        raise PayloadInvalid("data.object", "is required")
    occurred_at = _stripe_time(_need(payload, "created"))
    base = {"event_id": event_id, "occurred_at": occurred_at, **_stripe_customer(obj)}
    if kind == "charge.succeeded":
        if obj.get("invoice"):
            return []
        return [_stripe_money(base, "purchase", obj, _need(obj, "id"), "amount")]
    if kind == "invoice.paid":
        doc = _stripe_money(base, "purchase", obj, _need(obj, "id"), "amount_paid")
        if obj.get("subscription"):
            doc["properties"]["subscription_id"] = f"stripe:{obj['subscription']}"
        return [doc]
    if kind == "charge.refunded":
        # the refunded charge's id: invoice payments are keyed by their invoice
        order = obj.get("invoice") or _need(obj, "id")
        if isinstance(order, dict):
            order = order.get("id")
        return [_stripe_money(base, "refund", obj, order, "amount_refunded")]
    if kind == "customer.subscription.deleted":
        reason = _get(obj, "cancellation_details.reason")
        properties: dict[str, Any] = {"subscription_id": f"stripe:{_need(obj, 'id')}"}
        if reason:
            properties["reason"] = str(reason)
        return [{**base, "type": "subscription_cancelled", "properties": properties}]
    return []


# --- Zendesk ----------------------------------------------------------------------------------

SOLVED = frozenset({"solved", "closed"})
OPENED = frozenset({"new", "open", "opened"})
CSAT_WORDS = {"good": 5, "bad": 1}


def _csat(value: Any) -> int | None:
    if isinstance(value, str):
        word = value.strip().lower()
        if word in CSAT_WORDS:
            return CSAT_WORDS[word]
        if word.isdigit():
            return int(word)
        return None  # offered, unoffered, empty: no answer yet
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def zendesk(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A ticket created / solved, with its satisfaction rating, → support_ticket.

    Two payload shapes: Zendesk's event webhooks (``type`` ``zen:event-type:ticket.created`` or
    ``…ticket.status_changed``, ticket in ``detail``), and a trigger webhook whose JSON body the
    README gives (``ticket_id``, ``status``, ``requester_id``, ``satisfaction``, ``updated_at``).

    Zendesk signs the timestamp header and the body, nothing else, so the ``event_id`` comes
    from the body only: an event webhook's own ``id``; for a trigger body, a digest of the
    ticket, its status, the rating and the ticket's ``updated_at``. Not the invocation-id
    header (unsigned: a replay within the signature's window could set a new one) and not the
    signed timestamp (Zendesk re-signs its retries with a new one, and a retry is the same
    event). A genuine change of the ticket (a new ``updated_at``, a new rating) is a new event.
    """
    kind = payload.get("type")
    if isinstance(kind, str) and kind.startswith("zen:event-type:"):
        ticket = _zendesk_event(payload, kind)
    else:
        ticket = _zendesk_trigger(payload)
    if ticket is None:
        return []
    properties: dict[str, Any] = {"ticket_id": f"zendesk:{ticket.id}", "status": ticket.status}
    if ticket.csat is not None:
        properties["csat"] = ticket.csat
    doc: dict[str, Any] = {
        "event_id": ticket.event_id,
        "type": "support_ticket",
        "customer_id": ticket.requester
        if payload.get("requester_external_id")
        else f"zendesk:{ticket.requester}",
        "properties": properties,
    }
    if ticket.occurred_at:
        doc["occurred_at"] = ticket.occurred_at
    return [doc]


class _TicketChange(NamedTuple):
    """What a Zendesk payload says happened to a ticket."""

    id: str | None
    requester: str | None
    status: str  # opened, solved
    event_id: str
    occurred_at: Any
    csat: int | None


def _zendesk_event(payload: Mapping[str, Any], kind: str) -> _TicketChange | None:
    """An event webhook's ticket created or solved; None for any other event."""
    detail = _get(payload, "detail")
    if not isinstance(detail, dict):
        raise PayloadInvalid("detail", "is required")
    if kind == "zen:event-type:ticket.created":
        status = "opened"
    elif kind == "zen:event-type:ticket.status_changed":
        current = str(_get(payload, "event.current") or "").lower()
        if current not in SOLVED:
            return None
        status = "solved"
    else:
        return None
    return _TicketChange(
        id=_str(_need(detail, "id")),
        requester=_str(_need(detail, "requester_id")),
        status=status,
        event_id=f"zendesk:{_need(payload, 'id')}",
        occurred_at=_need(payload, "time"),
        csat=None,
    )


def _zendesk_trigger(payload: Mapping[str, Any]) -> _TicketChange | None:
    """A trigger body's ticket opened or solved; None for another status (pending, hold)."""
    ticket = _str(_need(payload, "ticket_id"))
    requester = _str(payload.get("requester_external_id")) or _str(_need(payload, "requester_id"))
    raw_status = str(_need(payload, "status")).strip().lower()
    if raw_status in SOLVED:
        status = "solved"
    elif raw_status in OPENED:
        status = "opened"
    else:
        return None  # not a touchpoint
    csat = _csat(payload.get("satisfaction"))
    occurred_at = payload.get("updated_at")
    # the content is the identity: retries and replays of one body are one event
    identity = hashlib.sha256(f"{ticket}|{status}|{csat}|{occurred_at}".encode())
    event_id = f"zendesk:{identity.hexdigest()[:32]}"
    return _TicketChange(ticket, requester, status, event_id, occurred_at, csat)
