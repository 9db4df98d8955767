"""The customer facts a lifecycle record carries (clm_stage_engine.records), pure."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from clm_domain.lifecycle import CustomerState, Stage
from clm_stage_engine.records import FACT_FIELDS, customer_facts

T = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
BOOKKEEPING = {"last_event_source", "last_event_id", "recent_visits", "recent_purchases"}
#: The purchase-day facts: shown by the read API, not (yet) part of the record contract.
UNPUBLISHED = {"purchase_days", "repeat_spend", "purchase_currency"}


def test_the_facts_are_every_field_but_the_reducers_bookkeeping_in_field_order() -> None:
    assert list(FACT_FIELDS) == [
        f.name for f in fields(CustomerState) if f.name not in BOOKKEEPING | UNPUBLISHED
    ]
    state = CustomerState(
        "c-1",
        Stage.RETENTION,
        T,
        T - timedelta(days=3),
        T,
        "shop",
        "email",
        "spring",
        T - timedelta(days=2),
        T - timedelta(days=1),
        T,
        2,
        Decimal("1234.5000"),
        1,
        Decimal("0.01"),
        purchase_days=2,
        repeat_spend=Decimal("34.5"),
        purchase_currency="EUR",
        last_nps=9,
        events=6,
        last_event_source="shop",
        last_event_id="e6",
        recent_visits=(T,),
    )
    facts = customer_facts(state)
    assert list(facts) == list(FACT_FIELDS)
    expected = {name: getattr(state, name) for name in FACT_FIELDS}
    expected |= {"revenue": "1234.5000", "refunded": "0.01"}  # exact decimal strings
    assert facts == expected
    assert not UNPUBLISHED & set(facts)
    doc = orjson.loads(orjson.dumps(facts))
    assert doc["stage"] == "retention"
    assert doc["stage_entered_at"] == "2026-12-01T09:30:00+00:00"
    assert doc["first_channel"] == "email"
    assert doc["last_nps"] == 9
