"""The contract's bounds (clm_domain.bounds): each side of each one, and the arithmetic the
engine and metrics do on values inside them never overflowing."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from clm_domain import bounds
from clm_domain.events import (
    ENVELOPE_ID_FIELDS,
    ENVELOPE_LABEL_FIELDS,
    EventBase,
    Properties,
    parse_event,
    parse_event_json,
    parse_stored_event_json,
)
from clm_domain.kpis import exact_money, money
from clm_domain.lifecycle import CustomerState, Stage, advance
from clm_domain.rules import MAX_RULE_DAYS, RulesError, parse_rules
from clm_ingest import webhooks
from clm_ingest.normalize import field_errors, normalize
from clm_ingest.segment import DEFAULT_TRACK_EVENTS, SegmentInvalid, to_event
from tests.factories import NOW, event_doc

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9899, 12, 31, 23, 59, 59, 999999)
).map(lambda d: d.replace(tzinfo=UTC))


@given(instants, offsets)
def test_every_instant_inside_with_every_allowed_offset_is_kept_in_utc(
    at: datetime, zone: timezone
) -> None:
    written = at.astimezone(zone)
    kept = bounds.utc_time(written)
    assert kept == at
    assert kept.tzinfo is UTC


@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
def test_any_timestamp_python_can_hold_is_kept_or_refused_never_a_crash(
    local: datetime, minutes: int
) -> None:
    """What pydantic can parse (offsets up to ±23:59, years 1..9999) is either inside the
    bounds or a ValueError: never an OverflowError (year 0 or 10000 in UTC)."""
    written = local.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    try:
        kept = bounds.utc_time(written)
    except ValueError:
        inside_offset = abs(minutes) <= 14 * 60
        if inside_offset and datetime(1971, 1, 1) <= local <= datetime(9898, 1, 1):
            raise
        return
    assert bounds.TIME_MIN <= kept < bounds.TIME_END
    assert kept == written


@pytest.mark.parametrize(
    ("written", "inside"),
    [
        ("1970-01-01T00:00:00Z", True),
        ("1969-12-31T23:59:59.999999Z", False),
        ("1970-01-01T14:00:00+14:00", True),
        ("1970-01-01T13:59:59+14:00", False),
        ("1969-12-31T10:00:00-14:00", True),
        ("1969-12-31T09:59:59-14:00", False),
        ("9899-12-31T23:59:59.999999Z", True),
        ("9900-01-01T00:00:00Z", False),
        ("9899-12-31T23:59:59-14:00", False),  # 9900-01-01T13:59:59Z
        ("2026-12-07T10:00:00+14:00", True),
        ("2026-12-07T10:00:00+14:01", False),
        ("2026-12-07T10:00:00-14:01", False),
        ("2026-12-07T10:00:00+16:00", False),
        ("0001-01-01T00:00:00+14:00", False),
        ("9999-12-31T23:59:59-14:00", False),
    ],
)
def test_time_bounds_each_side(written: str, inside: bool) -> None:
    value = datetime.fromisoformat(written)
    if inside:
        assert bounds.utc_time(value) == value
    else:
        with pytest.raises(ValueError, match=r"offset|must be from"):
            bounds.utc_time(value)


@given(instants)
def test_the_largest_rule_interval_and_any_rounding_stay_in_the_calendar(at: datetime) -> None:
    """What the engine and metrics add to an event time: a rule's days (capped), a day of
    rounding up, the metrics' 2 days ahead."""
    assert at + timedelta(days=MAX_RULE_DAYS + 3) <= datetime.max.replace(tzinfo=UTC)
    assert at - timedelta(days=MAX_RULE_DAYS + 7) >= datetime.min.replace(tzinfo=UTC)


def test_the_lifecycle_rules_refuse_intervals_past_the_cap() -> None:
    with pytest.raises(RulesError):
        parse_rules(f"version: 1\nchurned:\n  inactive_days: {MAX_RULE_DAYS + 1}\n")
    rules = parse_rules(
        f"version: 1\nat_risk:\n  inactive_days: {MAX_RULE_DAYS - 1}\n"
        f"churned:\n  inactive_days: {MAX_RULE_DAYS}\n"
    )
    last = bounds.TIME_END - timedelta(microseconds=1)
    state = CustomerState(
        customer_id="c",
        stage=Stage.CONVERSION,
        stage_entered_at=last,
        first_seen_at=last,
        last_seen_at=last,
        first_source="shop",
    )
    moved, moves = advance(state, datetime.max.replace(tzinfo=UTC), rules)
    assert moved.stage is Stage.CHURNED
    assert len(moves) == 2


@given(st.lists(st.decimals(min_value=0, max_value=bounds.MONEY_MAX, places=4), max_size=50))
def test_money_sums_are_exact(amounts: list[Decimal]) -> None:
    total = Decimal(0)
    for amount in amounts:
        total = bounds.add_money(total, amount)
    assert total == sum((Decimal(int(a.scaleb(4))) for a in amounts), Decimal(0)).scaleb(-4)


def test_money_sums_past_the_default_context_stay_exact() -> None:
    """Python's default context keeps 28 digits: past 10**24 it would round."""
    total = Decimal("1" + "0" * 30 + ".0001")
    exact = Decimal("1" + "0" * 29 + "1.0001")
    assert bounds.add_money(total, Decimal(1)) == exact
    assert total + Decimal(1) != exact


@pytest.mark.parametrize(
    ("amount", "inside"),
    [
        ("99999999999999.9999", True),
        ("100000000000000", False),
        ("0", True),
        ("-0.0001", False),
        ("0.0001", True),
        ("0.00001", False),
        ("NaN", False),
        ("Infinity", False),
    ],
)
def test_money_bound_each_side(amount: str, inside: bool) -> None:
    doc = event_doc("purchase", amount=amount)
    if inside:
        assert parse_event(doc, now=NOW).properties.amount == Decimal(amount)  # type: ignore[union-attr]
    else:
        with pytest.raises(ValidationError) as refused:
            parse_event(doc, now=NOW)
        assert [e["loc"][-1] for e in refused.value.errors()] == ["amount"]


def nested(levels: int) -> Any:
    value: Any = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@given(
    st.recursive(
        st.none() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(max_size=3), c)
    )
)
def test_depth_walk_agrees_with_the_raw_text(value: Any) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        return 0

    text = json.dumps(value).encode()
    assert bounds.raw_depth(text) == depth(value)
    for limit in range(0, 6):
        assert (bounds.too_deep(value, 1, limit) is None) == (depth(value) <= limit)


def test_raw_depth_ignores_brackets_in_strings() -> None:
    assert bounds.raw_depth(b'{"a": "[[[{{{\\"]]]", "b": [1]}') == 2
    assert bounds.raw_depth(b"[" * 5000) == 5000


@pytest.mark.parametrize(("levels", "inside"), [(30, True), (31, False)])
def test_an_unknown_property_may_nest_to_level_32(levels: int, inside: bool) -> None:
    doc = event_doc("custom", deep=nested(levels))  # event 1, properties 2, deep 3..
    if inside:
        parse_event(doc, now=NOW)
    else:
        with pytest.raises(ValidationError) as refused:
            parse_event(doc, now=NOW)
        assert "properties.deep.k.k" in str(refused.value)


ID_FIELDS = ("customer_id", "anonymous_id", "event_id")


@given(st.text(min_size=1, max_size=bounds.MAX_ID_LENGTH), st.sampled_from(ID_FIELDS))
def test_an_id_is_accepted_exactly_when_it_is_one_clean_path_segment(
    value: str, field: str
) -> None:
    clean = re.fullmatch(r"[^\x00-\x1f\x7f-\x9f/]+", value) is not None and value not in {
        ".",
        "..",
    }
    doc = {**event_doc("signup"), field: value}
    if clean:
        assert getattr(parse_event(doc, now=NOW), field) == value
    else:
        with pytest.raises(ValidationError) as refused:
            parse_event(doc, now=NOW)
        assert [e["field"] for e in field_errors(refused.value)] == [field]


def test_an_id_of_201_characters_is_refused() -> None:
    parse_event({**event_doc("signup"), "customer_id": "i" * 200}, now=NOW)
    with pytest.raises(ValidationError):
        parse_event({**event_doc("signup"), "customer_id": "i" * 201}, now=NOW)


def test_segment_messages_too_deep_are_refused_naming_the_path() -> None:
    msg = {"userId": "u", "event": "Thing", "properties": {"x": nested(300)}}
    with pytest.raises(SegmentInvalid) as refused:
        to_event(msg, "track", track_events=DEFAULT_TRACK_EVENTS)
    assert refused.value.field.startswith("properties.x.k.k")


def test_provider_ids_outside_the_contract_name_the_field() -> None:
    (doc,) = webhooks.zendesk(
        {
            "ticket_id": 7,
            "status": "solved",
            "requester_id": 1,
            "requester_external_id": "crm/42",
            "updated_at": "2026-11-23T10:00:00Z",
        },
    )
    with pytest.raises(ValidationError) as refused:
        normalize(doc, source="helpdesk", received_at=NOW)
    assert [e["field"] for e in field_errors(refused.value)] == ["customer_id"]


def test_a_stripe_time_beyond_the_calendar_is_refused() -> None:
    payload = {
        "id": "evt_1",
        "type": "charge.succeeded",
        "created": 10**15,
        "data": {"object": {"id": "ch_1", "amount": 100, "currency": "usd"}},
    }
    with pytest.raises(webhooks.PayloadInvalid) as refused:
        webhooks.stripe(payload)
    assert refused.value.field == "created"


def test_money_past_28_digits_is_shown_exactly_not_a_crash() -> None:
    """The read API and the KPIs print sums; Python's default context would round one past
    28 digits (normalize) or raise (quantize to the cent)."""
    total = Decimal("1" + "0" * 40 + ".0001")
    assert exact_money(total) == "1" + "0" * 40 + ".0001"
    assert money(total) == "1" + "0" * 40 + ".00"
    assert exact_money(Decimal("59.9000")) == "59.90"


@pytest.mark.parametrize("amount", ["abc", "1e999999999", [1]])
def test_a_shopify_refund_amount_that_is_no_number_is_refused(amount: Any) -> None:
    payload = {
        "id": 5,
        "order_id": 1,
        "created_at": "2026-11-23T10:00:00Z",
        "transactions": [{"kind": "refund", "amount": amount}],
    }
    with pytest.raises(webhooks.PayloadInvalid) as refused:
        webhooks.shopify("refunds/create", payload)
    assert refused.value.field == "transactions"


def test_events_stored_before_the_bounds_still_read_back_from_the_store() -> None:
    """A customer's history is refolded from the engine's store: an event accepted before
    these bounds (a '/' id, a C1 character in a label, 1900, JSON 50 deep) must still decode
    there, though the events topic's decoder refuses it now."""
    legacy = orjson.dumps(
        {
            **event_doc("custom", customer_id="crm/7", occurred_at="1900-01-01T00:00:00+05:00"),
            "channel": "e\x85mail",
            "properties": {"name": "old", "deep": nested(50)},
        }
    )
    with pytest.raises(ValidationError):
        parse_event_json(legacy)
    event = parse_stored_event_json(legacy)
    assert event.customer_id == "crm/7"
    assert event.occurred_at == datetime(1899, 12, 31, 19, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    # what Postgres cannot hold was never stored, and is still refused
    with pytest.raises(ValidationError):
        parse_stored_event_json(orjson.dumps({**event_doc("signup"), "customer_id": "a\x00"}))


def _patterned(model: type[BaseModel], pattern: str) -> set[str]:
    """The fields of ``model`` whose schema states ``pattern`` (an Id or Label field)."""
    out = set()
    for name, schema in model.model_json_schema()["properties"].items():
        members = schema.get("anyOf", [schema])
        if any(m.get("pattern") == pattern for m in members):
            out.add(name)
    return out


@pytest.mark.parametrize("model", [*Properties.__subclasses__(), EventBase])
def test_every_id_and_label_field_is_checked_by_its_model(model: type[BaseModel]) -> None:
    """The strict rules run in each model's validator, for the fields it lists: a new Id or
    Label field must be listed, or new events would pass unchecked."""
    if model is EventBase:
        ids, labels = set(ENVELOPE_ID_FIELDS), set(ENVELOPE_LABEL_FIELDS)
    else:
        ids, labels = set(model.ID_FIELDS), set(model.LABEL_FIELDS)  # type: ignore[attr-defined]
    assert _patterned(model, bounds.ID_PATTERN) == ids
    assert _patterned(model, bounds.TEXT_PATTERN) == labels
