"""The event contract v1: what it accepts, what it refuses and how it names the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from clm_domain.events import (
    EventType,
    Purchase,
    dump_event,
    error_field,
    example_event,
    json_schema,
    parse_event,
    parse_event_json,
    partition_key,
)
from tests.factories import NOW, PROPERTIES, event_doc


def errors_of(doc: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        parse_event(doc, now=NOW)
    return {error_field(tuple(e["loc"]), e["type"]): e["msg"] for e in info.value.errors()}


@pytest.mark.parametrize("type_", sorted(PROPERTIES))
def test_every_type_has_a_valid_example_that_round_trips(type_: str) -> None:
    event = parse_event(event_doc(type_), now=NOW)
    assert event.type == type_
    assert parse_event_json(dump_event(event)) == event


def test_every_contract_type_is_covered_by_the_examples() -> None:
    assert set(PROPERTIES) == {t.value for t in EventType}


def test_money_is_a_decimal_on_the_way_in_and_a_string_on_the_wire() -> None:
    event = parse_event(event_doc("purchase", amount="12.50"), now=NOW)
    assert isinstance(event, Purchase)
    assert event.properties.amount == Decimal("12.50")
    assert b'"amount":"12.50"' in dump_event(event)


def test_unknown_properties_are_kept() -> None:
    event = parse_event(event_doc("purchase", coupon="XMAS"), now=NOW)
    assert b'"coupon":"XMAS"' in dump_event(event)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"properties": {"order_id": "o", "amount": "-1", "currency": "EUR"}}, "properties.amount"),
        (
            {"properties": {"order_id": "o", "amount": "1", "currency": "ZZZ"}},
            "properties.currency",
        ),
        ({"properties": {"order_id": "o", "currency": "EUR"}}, "properties.amount"),
        (
            {"properties": {"order_id": "o", "amount": "abc", "currency": "EUR"}},
            "properties.amount",
        ),
        (
            {"properties": {"order_id": "o", "amount": "NaN", "currency": "EUR"}},
            "properties.amount",
        ),
        ({"occurred_at": "2026-11-23T11:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-11-25T12:00:01Z"}, "occurred_at"),
        ({"type": "teleport"}, "type"),
        ({"event_id": ""}, "event_id"),
        ({"customer_id": 42}, "customer_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_purchases_name_the_offending_field(change: dict[str, Any], field: str) -> None:
    doc = {**event_doc("purchase"), **change}
    assert field in errors_of(doc)


def test_a_missing_type_names_type() -> None:
    doc = event_doc("purchase")
    del doc["type"]
    assert "type" in errors_of(doc)


def test_customer_or_anonymous_id_is_required() -> None:
    assert "customer_id" in errors_of(event_doc("site_visit", customer_id=None))
    anonymous = {**event_doc("site_visit", customer_id=None), "anonymous_id": "anon-1"}
    assert parse_event(anonymous, now=NOW).anonymous_id == "anon-1"


def test_marketing_spend_needs_no_customer_and_is_keyed_by_channel() -> None:
    event = parse_event(event_doc("marketing_spend", customer_id=None), now=NOW)
    assert partition_key(event) == "spend:paid_search"


def test_marketing_spend_period_must_be_ordered() -> None:
    doc = event_doc(
        "marketing_spend",
        period_start="2026-11-30T00:00:00Z",
        period_end="2026-11-01T00:00:00Z",
    )
    assert "properties" in errors_of(doc)


@pytest.mark.parametrize(
    ("type_", "props", "field"),
    [
        ("review", {"rating": 6}, "properties.rating"),
        ("review", {"rating": 0}, "properties.rating"),
        ("review", {"rating": "5"}, "properties.rating"),
        ("nps_response", {"score": 11}, "properties.score"),
        ("support_ticket", {"status": "lost"}, "properties.status"),
        ("support_ticket", {"csat": 9}, "properties.csat"),
        ("ad_click", {"campaign": ""}, "properties.campaign"),
        ("site_visit", {"url": ""}, "properties.url"),
        ("email_engagement", {"action": "deleted"}, "properties.action"),
    ],
)
def test_out_of_range_values_name_the_field(type_: str, props: dict[str, Any], field: str) -> None:
    assert field in errors_of(event_doc(type_, **props))


def test_partition_key_prefers_customer_then_anonymous_id() -> None:
    both = {**event_doc("site_visit"), "anonymous_id": "anon-9"}
    assert partition_key(parse_event(both, now=NOW)) == "cust-1"
    anon = {**event_doc("site_visit", customer_id=None), "anonymous_id": "anon-9"}
    assert partition_key(parse_event(anon, now=NOW)) == "anon-9"


def test_json_schema_lists_every_type() -> None:
    text = str(json_schema())
    for t in EventType:
        assert t.value in text


@given(
    amount=st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False),
    at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 23), timezones=st.just(UTC)
    ),
)
def test_purchases_round_trip_exactly(amount: Decimal, at: datetime) -> None:
    doc = event_doc("purchase", amount=str(amount), occurred_at=at.isoformat())
    event = parse_event(doc, now=NOW)
    again = parse_event_json(dump_event(event))
    assert isinstance(again, Purchase)
    assert again.properties.amount == amount
    assert again.occurred_at == at


@pytest.mark.parametrize(
    ("written", "utc"),
    [
        ("Z", "10:00:00.123456"),
        ("+00:00", "10:00:00.123456"),
        ("+02:00", "08:00:00.123456"),
        ("-07:30", "17:30:00.123456"),
    ],
)
def test_timestamps_are_normalised_to_utc(written: str, utc: str) -> None:
    """Every offset parses to the same instant in the one ``datetime.UTC`` object (the reducer
    compares event times with Postgres' ones, which are in it: no offset call per comparison;
    Postgres itself refuses offsets past ±15:59), and goes on the wire in UTC."""
    doc = event_doc("site_visit", occurred_at=f"2026-11-23T10:00:00.123456{written}")
    event = parse_event(doc, now=NOW)
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at == datetime.fromisoformat(f"2026-11-23T10:00:00.123456{written}")
    wire = dump_event(event)
    assert f'"occurred_at":"2026-11-23T{utc}Z"'.encode() in wire
    again = parse_event_json(wire)
    assert again == event
    assert again.occurred_at.tzinfo is UTC


REQUIRED: dict[str, list[str]] = {
    "ad_click": ["campaign"],
    "site_visit": ["url"],
    "purchase": ["order_id", "amount", "currency"],
    "refund": ["order_id", "amount"],
    "support_ticket": ["ticket_id", "status"],
    "review": ["rating"],
    "nps_response": ["score"],
    "referral": ["referred_id"],
    "email_engagement": ["action", "campaign"],
    "marketing_spend": [
        "channel",
        "campaign",
        "amount",
        "currency",
        "period_start",
        "period_end",
    ],
    "custom": ["name"],
}


@pytest.mark.parametrize(
    ("type_", "name"), [(t, n) for t, names in REQUIRED.items() for n in names]
)
def test_each_missing_required_property_is_named(type_: str, name: str) -> None:
    doc = event_doc(type_)
    del doc["properties"][name]
    assert errors_of(doc) == {f"properties.{name}": "Field required"}


@pytest.mark.parametrize(
    ("type_", "props", "field"),
    [
        ("purchase", {"amount": 12}, None),  # a JSON number is a fine amount
        ("purchase", {"amount": [1]}, "properties.amount"),
        ("refund", {"amount": "-0.01"}, "properties.amount"),
        ("refund", {"currency": "eur"}, "properties.currency"),
        ("marketing_spend", {"amount": "-1"}, "properties.amount"),
        ("marketing_spend", {"currency": "ABC"}, "properties.currency"),
        ("nps_response", {"score": -1}, "properties.score"),
        ("nps_response", {"score": 7.5}, "properties.score"),
        ("support_ticket", {"csat": 0}, "properties.csat"),
        ("referral", {"referred_id": ""}, "properties.referred_id"),
        ("identify", {"traits": "pro"}, "properties.traits"),
        ("signup", {"email_hash": "x" * 200}, "properties.email_hash"),
        ("custom", {"name": ""}, "properties.name"),
    ],
)
def test_wrong_types_and_ranges_per_type(
    type_: str, props: dict[str, Any], field: str | None
) -> None:
    doc = event_doc(type_, **props)
    if field is None:
        parse_event(doc, now=NOW)
    else:
        assert field in errors_of(doc)


def test_unknown_properties_are_bounded() -> None:
    fits = event_doc("custom", blob="x" * 15_000)
    assert parse_event(fits, now=NOW).properties.model_extra == {"blob": "x" * 15_000}
    assert "properties" in errors_of(event_doc("custom", blob="x" * 17_000))
    assert "properties" in errors_of(event_doc("purchase", blob="x" * 17_000))


def test_an_unknown_property_beyond_64_bits_is_refused_not_a_crash() -> None:
    # found by the chaos suite: orjson's TypeError escaped the validator, so the ingest
    # answered 500 and the stage engine retried the record forever instead of dead-lettering it
    doc = event_doc("site_visit", n=10**30)
    assert "properties" in errors_of(doc)
    with pytest.raises(ValidationError, match="not plain JSON"):
        parse_event_json(json.dumps(doc).encode())


def test_every_type_has_a_documented_example_that_is_valid() -> None:
    for t in EventType:
        doc = example_event(t.value)
        assert parse_event({**doc, "source": "docs"}, now=NOW).type == t.value
