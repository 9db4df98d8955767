"""Ingest defaults and the source rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clm_ingest.normalize import SourceMismatch, field_errors, normalize
from tests.factories import NOW, event_doc


def test_missing_event_id_and_time_are_filled_and_source_comes_from_the_key() -> None:
    doc = event_doc("site_visit", source=None)
    del doc["event_id"]
    del doc["occurred_at"]
    event = normalize(doc, source="shop-eu", received_at=NOW)
    assert event.source == "shop-eu"
    assert event.occurred_at == NOW
    assert len(event.event_id) == 36


def test_a_body_claiming_another_source_is_refused() -> None:
    with pytest.raises(SourceMismatch, match="shop-eu"):
        normalize(event_doc("site_visit", source="shop-us"), source="shop-eu", received_at=NOW)


def test_a_non_object_body_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        normalize([1, 2], source="shop", received_at=NOW)
    assert field_errors(info.value)[0]["field"] in {"type", "body"}


def test_field_errors_name_fields_as_in_the_body() -> None:
    doc = event_doc("purchase", amount="-3")
    with pytest.raises(ValidationError) as info:
        normalize(doc, source="shop", received_at=NOW)
    assert field_errors(info.value) == [
        {"field": "properties.amount", "message": "Input should be greater than or equal to 0"}
    ]


def test_sent_at_corrects_the_client_clock_skew() -> None:
    # the client's clock runs 10 minutes slow: the event happened 2 s before it was sent
    doc = {**event_doc("site_visit"), "occurred_at": "2026-11-23T11:49:58Z"}
    doc["sent_at"] = "2026-11-23T11:50:00Z"
    event = normalize(doc, source="shop", received_at=NOW)
    assert event.occurred_at.isoformat() == "2026-11-23T11:59:58+00:00"


def test_a_batch_sent_at_applies_and_an_unreadable_one_is_ignored() -> None:
    doc = {**event_doc("site_visit"), "occurred_at": "2026-11-23T11:00:00Z"}
    event = normalize(doc, source="shop", received_at=NOW, sent_at="2026-11-23T11:00:00Z")
    assert event.occurred_at == NOW
    # as Segment does: no usable sent_at, no correction
    kept = normalize({**doc, "sent_at": "later"}, source="shop", received_at=NOW)
    assert kept.occurred_at.isoformat() == "2026-11-23T11:00:00+00:00"
    # an absurd skew is not corrected (found by schemathesis): the event keeps its own time
    far = normalize(
        {**doc, "sent_at": "9999-12-31T00:00:00Z", "occurred_at": "1970-01-02T00:00:00Z"},
        source="shop",
        received_at=NOW,
    )
    assert far.occurred_at.isoformat() == "1970-01-02T00:00:00+00:00"
    # and a time outside the contract's bounds is refused whatever sent_at says
    with pytest.raises(ValidationError) as refused:
        normalize(
            {**doc, "sent_at": "9999-12-31T00:00:00Z", "occurred_at": "0001-01-02T00:00:00Z"},
            source="shop",
            received_at=NOW,
        )
    assert [e["field"] for e in field_errors(refused.value)] == ["occurred_at"]
