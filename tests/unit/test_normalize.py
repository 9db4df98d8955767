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
