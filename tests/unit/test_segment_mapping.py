"""Segment messages → touchpoint events: the mapping table, field names, ids and refusals."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from clm_domain.events import Custom, Identify, Purchase, Refund, Review, SiteVisit
from clm_ingest.normalize import normalize
from clm_ingest.segment import DEFAULT_TRACK_EVENTS, SegmentInvalid, to_event
from tests.factories import NOW


def convert(msg: dict[str, Any], call: str, table: dict[str, str] | None = None) -> Any:
    doc = to_event(msg, call, track_events=table or DEFAULT_TRACK_EVENTS)
    return normalize(doc, source="web", received_at=NOW)


def track(event: str, **properties: Any) -> dict[str, Any]:
    return {
        "userId": "u-1",
        "anonymousId": "a-1",
        "messageId": "m-1",
        "timestamp": "2026-11-23T11:00:00Z",
        "event": event,
        "properties": properties,
    }


def test_order_completed_is_a_purchase_with_exact_money_and_products() -> None:
    event = convert(
        track(
            "Order Completed",
            order_id="o-9",
            total=59.9,
            currency="eur",
            products=[{"sku": "a"}],
            coupon="X",
        ),
        "track",
    )
    assert isinstance(event, Purchase)
    assert (event.event_id, event.customer_id, event.anonymous_id) == ("m-1", "u-1", "a-1")
    assert str(event.properties.amount) == "59.9"
    assert event.properties.currency == "EUR"
    assert event.properties.items == [{"sku": "a"}]
    assert event.properties.model_extra == {"coupon": "X"}


def test_order_without_currency_takes_the_default() -> None:
    doc = to_event(
        track("Order Completed", order_id="o", revenue=10),
        "track",
        track_events=DEFAULT_TRACK_EVENTS,
        default_currency="GBP",
    )
    assert doc["properties"]["currency"] == "GBP"
    assert doc["properties"]["amount"] == "10"


def test_refund_review_and_signup_read_segment_names() -> None:
    refund = convert(track("Order Refunded", order_id="o-1", total="5.00", currency="USD"), "track")
    assert isinstance(refund, Refund)
    assert str(refund.properties.amount) == "5.00"
    review = convert(track("Product Reviewed", rating=4, review_body="ok"), "track")
    assert isinstance(review, Review)
    assert (review.properties.rating, review.properties.text) == (4, "ok")
    signup = convert(track("Signed Up", email=" A@B.example ", plan="pro"), "track")
    assert signup.type == "signup"
    dumped = signup.properties.model_dump()
    assert dumped["email_hash"] == hashlib.sha256(b"a@b.example").hexdigest()
    assert "email" not in dumped


@pytest.mark.parametrize(
    ("event", "properties", "type_", "checks"),
    [
        ("Promotion Clicked", {"name": "bf", "creative": "c1"}, "ad_click", {"campaign": "bf"}),
        ("Email Opened", {"campaign_name": "w"}, "email_engagement", {"action": "opened"}),
        ("Email Link Clicked", {"campaign_name": "w"}, "email_engagement", {"action": "clicked"}),
        (
            "Ticket Opened",
            {"ticket_id": 7},
            "support_ticket",
            {"status": "opened", "ticket_id": "7"},
        ),
        ("Ticket Solved", {"ticket_id": "7", "csat": 5}, "support_ticket", {"status": "solved"}),
        ("NPS Survey Submitted", {"score": 9}, "nps_response", {"score": 9}),
        ("Referral Sent", {"referee_id": "f-1"}, "referral", {"referred_id": "f-1"}),
        ("Subscription Cancelled", {"subscription_id": "s"}, "subscription_cancelled", {}),
    ],
)
def test_the_default_table(
    event: str, properties: dict[str, Any], type_: str, checks: dict[str, Any]
) -> None:
    converted = convert(track(event, **properties), "track")
    assert converted.type == type_
    dumped = converted.properties.model_dump()
    for key, value in checks.items():
        assert dumped[key] == value


def test_an_unmapped_track_event_is_kept_as_custom_with_its_properties() -> None:
    event = convert(track("Wishlist Shared", list_id="l-1"), "track")
    assert isinstance(event, Custom)
    assert event.properties.name == "Wishlist Shared"
    assert event.properties.model_extra == {"list_id": "l-1"}


def test_the_table_is_configurable() -> None:
    table = {**DEFAULT_TRACK_EVENTS, "Plan Upgraded": "purchase", "Order Completed": "custom"}
    upgraded = convert(
        track("Plan Upgraded", order_id="p", total=9, currency="USD"), "track", table
    )
    assert upgraded.type == "purchase"
    assert convert(track("Order Completed", total=1), "track", table).type == "custom"


def test_page_and_screen_are_site_visits() -> None:
    page = convert(
        {
            "anonymousId": "a-1",
            "name": "Home",
            "context": {"page": {"url": "https://s.example/", "referrer": "https://g.example/"}},
        },
        "page",
    )
    assert isinstance(page, SiteVisit)
    assert (page.properties.url, page.properties.referrer) == (
        "https://s.example/",
        "https://g.example/",
    )
    screen = convert({"userId": 42, "name": "Cart"}, "screen")
    assert isinstance(screen, SiteVisit)
    assert screen.properties.url == "app://screen/Cart"
    assert screen.customer_id == "42"


def test_identify_alias_and_group() -> None:
    ident = convert({"userId": "u", "anonymousId": "a", "traits": {"plan": "pro"}}, "identify")
    assert isinstance(ident, Identify)
    assert ident.properties.traits == {"plan": "pro"}
    alias = convert({"userId": "u", "previousId": "old"}, "alias")
    assert isinstance(alias, Identify)
    assert (alias.customer_id, alias.anonymous_id) == ("u", "old")
    group = convert({"userId": "u", "groupId": "g-1", "traits": {"n": 1}}, "group")
    assert isinstance(group, Custom)
    assert group.properties.name == "group"


def test_channel_comes_from_the_campaign_medium() -> None:
    msg = {**track("Signed Up"), "context": {"campaign": {"medium": "CPC", "name": "bf"}}}
    assert convert(msg, "track").channel == "paid_search"
    msg = {**track("Signed Up"), "context": {"campaign": {"medium": "newsletter"}}}
    assert convert(msg, "track").channel == "newsletter"


def test_the_ip_address_and_user_agent_are_carried_as_the_context() -> None:
    seen = {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "locale": "en-GB"}
    event = convert({**track("Signed Up"), "context": seen}, "track")
    assert event.context is not None
    assert (event.context.ip, event.context.user_agent) == ("203.0.113.9", "Mozilla/5.0")
    assert convert({**track("Signed Up"), "context": {"ip": 7}}, "track").context is None


def test_sent_at_corrects_the_client_clock() -> None:
    # the client's clock is 1 hour fast: stamped 13:00, sent 13:00:05, received at 12:00
    msg = {
        **track("Signed Up"),
        "timestamp": "2026-11-23T13:00:00Z",
        "sentAt": "2026-11-23T13:00:05Z",
    }
    event = convert(msg, "track")
    assert event.occurred_at.isoformat() == "2026-11-23T11:59:55+00:00"


@pytest.mark.parametrize(
    ("msg", "call", "field"),
    [
        ([1], "track", "body"),
        ({"userId": "u"}, "track", "event"),
        ({"userId": "u", "event": "X", "properties": [1]}, "track", "properties"),
        ({"userId": "u"}, "alias", "previousId"),
        ({"userId": "u"}, "bogus", "type"),
        ({"userId": "u", "event": "X", "properties": {"p": "x" * 40_000}}, "track", "body"),
        ({"userId": {"id": "u"}, "event": "X"}, "track", "userId"),
        ({"anonymousId": ["a"]}, "identify", "anonymousId"),
        ({"userId": "u", "messageId": True}, "identify", "messageId"),
        ({"userId": "u", "previousId": {}}, "alias", "previousId"),
        ({"userId": "u", "event": {"name": "X"}}, "identify", "event"),
    ],
)
def test_unreadable_messages_name_the_field(msg: Any, call: str, field: str) -> None:
    with pytest.raises(SegmentInvalid) as info:
        to_event(msg, call, track_events=DEFAULT_TRACK_EVENTS)
    assert info.value.field == field
