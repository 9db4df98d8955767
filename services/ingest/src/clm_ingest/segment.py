"""Segment's Tracking API messages → touchpoint events (pure).

A Segment message (``track``, ``identify``, ``page``, ``screen``, ``group``, ``alias``) with its
field names (``userId``, ``anonymousId``, ``messageId``, ``timestamp``, ``sentAt``, ``context``,
``properties``, ``traits``) becomes one event of contract v1. Track events map to touchpoint
types by a table (:data:`DEFAULT_TRACK_EVENTS`, from Segment's e-commerce, B2B SaaS and email
specs; overridable with ``CLM_INGEST_SEGMENT_EVENTS``); an unmapped track event becomes a
``custom`` event named after it, with its properties kept. ``messageId`` is the ``event_id``,
so a retried message counts once per source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson

from clm_domain import bounds

MAX_MESSAGE_BYTES = 32 * 1024  # Segment: 32 KB per message
MAX_BATCH_BYTES = 500 * 1024  # Segment: 500 KB per batch request

# Segment event name -> touchpoint type. The properties each type needs are read from the
# names Segment's specs use (see the README's mapping table).
DEFAULT_TRACK_EVENTS: dict[str, str] = {
    "Order Completed": "purchase",
    "Order Refunded": "refund",
    "Signed Up": "signup",
    "Product Reviewed": "review",
    "Promotion Clicked": "ad_click",
    "Subscription Cancelled": "subscription_cancelled",
    "Email Opened": "email_engagement",
    "Email Link Clicked": "email_engagement",
    "Ticket Opened": "support_ticket",
    "Ticket Solved": "support_ticket",
    "NPS Survey Submitted": "nps_response",
    "Referral Sent": "referral",
}

# utm_medium (context.campaign.medium) -> channel
MEDIUM_CHANNELS: dict[str, str] = {
    "cpc": "paid_search",
    "ppc": "paid_search",
    "paid_search": "paid_search",
    "paidsearch": "paid_search",
    "social": "social",
    "paid_social": "social",
    "email": "email",
    "referral": "referral",
    "organic": "organic",
    "direct": "direct",
}

CALLS = frozenset({"track", "identify", "page", "screen", "group", "alias"})


class SegmentInvalid(Exception):
    """A message that cannot be read as a Segment call (before contract validation)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _money(value: Any) -> Any:
    """Numbers as exact decimal strings (JSON floats print shortest: 59.9 → "59.9")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return format(Decimal(repr(value)), "f")
    return value


def _first(props: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if props.get(name) is not None:
            return props[name]
    return None


def _pick(props: dict[str, Any], **wanted: Any) -> dict[str, Any]:
    """The given properties (None left out) over the message's other properties (kept)."""
    return {**props, **{k: v for k, v in wanted.items() if v is not None}}


def _purchase(p: dict[str, Any], _: str, default_currency: str) -> dict[str, Any]:
    currency = _first(p, "currency") or default_currency
    rest = {k: v for k, v in p.items() if k not in {"total", "revenue", "value", "products"}}
    return _pick(
        rest,
        order_id=_first(p, "order_id", "orderId", "checkout_id"),
        amount=_money(_first(p, "total", "revenue", "value")),
        currency=currency.upper() if isinstance(currency, str) else currency,
        items=p.get("products"),
    )


def _refund(p: dict[str, Any], _: str, default_currency: str) -> dict[str, Any]:
    currency = _first(p, "currency") or default_currency
    rest = {k: v for k, v in p.items() if k not in {"total", "revenue", "value"}}
    return _pick(
        rest,
        order_id=_first(p, "order_id", "orderId"),
        amount=_money(_first(p, "total", "revenue", "value", "amount")),
        currency=currency.upper() if isinstance(currency, str) else currency,
    )


def _signup(p: dict[str, Any], _: str, __: str) -> dict[str, Any]:
    email = p.get("email")
    rest = {k: v for k, v in p.items() if k != "email"}  # the address itself is not kept
    email_hash = (
        hashlib.sha256(email.strip().lower().encode()).hexdigest()
        if isinstance(email, str) and email.strip()
        else None
    )
    return _pick(rest, email_hash=email_hash)


def _review(p: dict[str, Any], _: str, __: str) -> dict[str, Any]:
    return _pick(p, text=_first(p, "review_body", "text"))


def _ad_click(p: dict[str, Any], _: str, __: str) -> dict[str, Any]:
    return _pick(
        p,
        campaign=_first(p, "campaign", "name", "promotion_id"),
        ad=_first(p, "ad", "promotion_id"),
        creative=p.get("creative"),
    )


def _email(p: dict[str, Any], name: str, __: str) -> dict[str, Any]:
    return _pick(
        p,
        action=p.get("action") or ("opened" if name == "Email Opened" else "clicked"),
        campaign=_first(p, "campaign", "campaign_name", "email_subject"),
    )


def _ticket(p: dict[str, Any], name: str, __: str) -> dict[str, Any]:
    return _pick(
        p,
        ticket_id=_id(_first(p, "ticket_id", "ticketId"), "properties.ticket_id"),
        status=p.get("status") or ("solved" if name == "Ticket Solved" else "opened"),
    )


def _nps(p: dict[str, Any], _: str, __: str) -> dict[str, Any]:
    return _pick(p, score=_first(p, "score", "nps"))


def _referral(p: dict[str, Any], _: str, __: str) -> dict[str, Any]:
    return _pick(p, referred_id=_first(p, "referred_id", "referee_id", "referredId"))


def _unchanged(p: dict[str, Any], _: str, __: str) -> dict[str, Any]:
    return p


PROPERTY_MAPPERS: dict[str, Callable[[dict[str, Any], str, str], dict[str, Any]]] = {
    "purchase": _purchase,
    "refund": _refund,
    "signup": _signup,
    "review": _review,
    "ad_click": _ad_click,
    "email_engagement": _email,
    "support_ticket": _ticket,
    "nps_response": _nps,
    "referral": _referral,
    "subscription_cancelled": _unchanged,
}


def _object(msg: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = msg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SegmentInvalid(name, "must be an object")
    return value


def _id(value: Any, field: str) -> str | None:
    """Segment accepts string or number ids; anything else is refused (naming ``field``)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise SegmentInvalid(field, "must be a string or a number")
    return str(value)


def channel_of(context: Mapping[str, Any]) -> str | None:
    campaign = context.get("campaign")
    if not isinstance(campaign, dict):
        return None
    medium = campaign.get("medium")
    if not isinstance(medium, str) or not medium.strip():
        return None
    key = medium.strip().lower()
    return MEDIUM_CHANNELS.get(key, key[:200])


def to_event(
    msg: Any,
    call: str,
    *,
    track_events: Mapping[str, str],
    default_currency: str = "USD",
) -> dict[str, Any]:
    """One Segment message as a request body of contract v1 (validated later by normalize).

    ``call`` is the call type of the path (``track`` for ``/v1/track``), or the message's own
    ``type`` in a batch. ``sentAt`` is carried as ``sent_at`` for the clock-skew correction.
    """
    message = _readable(msg, call)
    context = _object(message, "context")
    properties = _object(message, "properties")
    traits = _object(message, "traits")
    doc = _ids_and_times(message, context)
    if call == "track":
        doc.update(_track(message, properties, track_events, default_currency))
    elif call in {"page", "screen"}:
        doc.update(_page_or_screen(message, call, context, properties))
    elif call == "identify":
        doc["type"] = "identify"
        doc["properties"] = {"traits": traits or _object(context, "traits")}
    elif call == "alias":
        doc.update(_alias(message))
    else:
        doc.update(_group(message, traits))
    return doc


def _readable(msg: Any, call: str) -> dict[str, Any]:
    """``msg`` when it is a message of a known call type within Segment's bounds."""
    if not isinstance(msg, dict):
        raise SegmentInvalid("body", "a message must be a JSON object")
    deep = bounds.too_deep(msg, 1)  # before dumps, whose own limit is a crash (a 500)
    if deep is not None:
        raise SegmentInvalid(deep[1:], f"nested more than {bounds.MAX_JSON_DEPTH} levels deep")
    if len(orjson.dumps(msg)) > MAX_MESSAGE_BYTES:
        raise SegmentInvalid("body", f"message larger than {MAX_MESSAGE_BYTES} bytes")
    if call not in CALLS:
        raise SegmentInvalid("type", f"unknown call type {call!r}")
    if "event" in msg and not isinstance(msg["event"], str):
        raise SegmentInvalid("event", "must be a string")
    return msg


def _ids_and_times(msg: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """What every call carries: its ids, its times and the channel (those it has)."""
    doc: dict[str, Any] = {}
    for target, value in (
        ("event_id", _id(msg.get("messageId"), "messageId")),
        ("customer_id", _id(msg.get("userId"), "userId")),
        ("anonymous_id", _id(msg.get("anonymousId"), "anonymousId")),
        ("occurred_at", msg.get("timestamp") or msg.get("originalTimestamp")),
        ("sent_at", msg.get("sentAt")),
        ("channel", channel_of(context)),
    ):
        if value is not None:
            doc[target] = value
    seen = _seen_by(context)
    if seen:
        doc["context"] = seen
    return doc


def _seen_by(context: Mapping[str, Any]) -> dict[str, str]:
    """The request's IP address and user agent, when the library sent them (personal data:
    sealed on the topic)."""
    seen = {"ip": context.get("ip"), "user_agent": context.get("userAgent")}
    return {k: v for k, v in seen.items() if isinstance(v, str) and v}


def _track(
    msg: Mapping[str, Any],
    properties: dict[str, Any],
    track_events: Mapping[str, str],
    default_currency: str,
) -> dict[str, Any]:
    """A track call: the touchpoint its event name maps to, else a ``custom`` one."""
    name = msg.get("event")
    if not isinstance(name, str) or not name.strip():
        raise SegmentInvalid("event", "a track call needs the event name")
    kind = track_events.get(name, "custom")
    mapper = PROPERTY_MAPPERS.get(kind)
    if kind == "custom":
        return {"type": kind, "properties": {**properties, "name": name}}
    if mapper is None:
        return {"type": kind, "properties": properties}
    return {"type": kind, "properties": mapper(properties, name, default_currency)}


def _page_or_screen(
    msg: Mapping[str, Any], call: str, context: Mapping[str, Any], properties: dict[str, Any]
) -> dict[str, Any]:
    """A page or screen call: a site visit (a screen without a URL gets an ``app://`` one)."""
    page = _object(context, "page")
    name = msg.get("name")
    url = _first(properties, "url") or page.get("url")
    if url is None and call == "screen" and isinstance(name, str) and name:
        url = f"app://screen/{name}"
    referrer = _first(properties, "referrer") or page.get("referrer")
    rest = {k: v for k, v in properties.items() if k not in {"url", "referrer"}}
    return {
        "type": "site_visit",
        "properties": _pick(rest, url=url, referrer=referrer or None, name=name),
    }


def _alias(msg: Mapping[str, Any]) -> dict[str, Any]:
    """An alias call links the previous id (an anonymous or older id) to ``userId``."""
    previous = _id(msg.get("previousId"), "previousId")
    if previous is None:
        raise SegmentInvalid("previousId", "an alias call needs previousId")
    return {
        "type": "identify",
        "anonymous_id": previous,
        "properties": {"traits": {}, "alias": True},
    }


def _group(msg: Mapping[str, Any], traits: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "custom",
        "properties": {
            "name": "group",
            "group_id": _id(msg.get("groupId"), "groupId"),
            "traits": traits,
        },
    }
