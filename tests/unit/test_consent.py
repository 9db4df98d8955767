"""Consent events: the contract, the latest per purpose, and what marketing may do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from clm_domain.consent import (
    ConsentGiven,
    consent_doc,
    latest_consents,
    marketing_decision,
)
from clm_domain.events import Consent, dump_event, error_field, parse_event, parse_event_json
from tests.factories import NOW, event_doc

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def consent(purpose: str = "marketing", granted: Any = False, **envelope: Any) -> dict[str, Any]:
    return event_doc("consent", purpose=purpose, granted=granted, **envelope)


def errors_of(doc: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        parse_event(doc, now=NOW)
    return {error_field(tuple(e["loc"]), e["type"]): e["msg"] for e in info.value.errors()}


def test_a_consent_event_parses_and_round_trips() -> None:
    event = parse_event(consent("analytics", True), now=NOW)
    assert isinstance(event, Consent)
    assert event.properties.purpose == "analytics"
    assert event.properties.granted is True
    assert parse_event_json(dump_event(event)) == event


@pytest.mark.parametrize("purpose", ["sales", "", "Marketing", None])
def test_an_unknown_purpose_is_refused_naming_the_field(purpose: Any) -> None:
    assert "properties.purpose" in errors_of(consent(purpose))


@pytest.mark.parametrize("granted", ["false", 0, 1, "yes", None])
def test_granted_must_be_a_json_boolean(granted: Any) -> None:
    assert "properties.granted" in errors_of(consent(granted=granted))


def test_purpose_and_granted_are_required() -> None:
    doc = event_doc("consent")
    doc["properties"] = {}
    errors = errors_of(doc)
    assert {"properties.purpose", "properties.granted"} <= set(errors)


def test_the_latest_per_customer_and_purpose_wins_whatever_the_order() -> None:
    def ev(at: datetime, granted: bool, event_id: str, purpose: str = "marketing") -> Consent:
        doc = consent(purpose, granted, occurred_at=at.isoformat(), event_id=event_id)
        event = parse_event(doc, now=NOW)
        assert isinstance(event, Consent)
        return event

    events = [
        ev(AT + timedelta(hours=1), False, "b"),
        ev(AT, True, "a"),
        ev(AT + timedelta(hours=1), True, "c"),  # a tie on time: the greater id wins
        ev(AT, True, "d", "analytics"),
    ]
    for order in (events, events[::-1]):
        rows = latest_consents(("cust-1", e) for e in order)
        assert [(r.purpose, r.granted, r.event_id) for r in rows] == [
            ("analytics", True, "d"),
            ("marketing", True, "c"),
        ]


def test_marketing_is_opt_out_and_says_why() -> None:
    assert marketing_decision({}) == (
        True,
        "no marketing consent recorded (opt-out default: allowed until withdrawn)",
    )
    withdrawn = {"marketing": ConsentGiven(False, AT)}
    assert marketing_decision(withdrawn) == (
        False,
        "marketing consent withdrawn at 2026-11-20T09:00:00+00:00",
    )
    granted = {"marketing": ConsentGiven(True, AT), "analytics": ConsentGiven(False, AT)}
    assert marketing_decision(granted)[0] is True


def test_the_read_documents_each_purpose() -> None:
    doc = consent_doc({"analytics": ConsentGiven(True, AT)})
    assert doc["consent"] == {
        "analytics": {"granted": True, "at": "2026-11-20T09:00:00+00:00"},
        "marketing": None,
    }
    assert doc["marketing"]["allowed"] is True
