"""Folding a batch: one state per customer, records for every applied event."""

from __future__ import annotations

import orjson

from clm_common.events import parse_event
from clm_common.lifecycle import Stage
from clm_stage_engine.processor import fold
from tests.factories import NOW, event_doc


def test_a_hot_customer_folds_to_one_state_and_every_event_gets_a_record() -> None:
    docs = [
        event_doc("site_visit", event_id="e1", occurred_at="2026-11-23T10:00:00Z"),
        event_doc("signup", event_id="e2", occurred_at="2026-11-23T10:01:00Z"),
        event_doc("purchase", event_id="e3", occurred_at="2026-11-23T10:02:00Z"),
        event_doc("site_visit", customer_id="other", event_id="e4"),
        event_doc("marketing_spend", customer_id=None, event_id="e5"),
    ]
    items = [(i, parse_event(d, now=NOW)) for i, d in enumerate(docs)]
    result = fold(items, {})
    assert set(result.states) == {"cust-1", "other"}
    assert result.states["cust-1"].stage is Stage.CONVERSION
    assert [t.to_stage for t in result.transitions if t.customer_id == "cust-1"] == [
        Stage.REACH,
        Stage.ACQUISITION,
        Stage.CONVERSION,
    ]
    assert result.applied == 5
    assert len(result.outbox) == 5
    purchase = orjson.loads(result.outbox[2][1])
    assert purchase["record_id"] == "shop:e3"
    assert purchase["stage_before"] == "acquisition"
    assert purchase["stage_after"] == "conversion"
    assert purchase["first_purchase"] is True
    assert purchase["customer"]["revenue"] == "59.90"
    spend = orjson.loads(result.outbox[4][1])
    assert spend["customer"] is None
    assert result.outbox[4][0] == "spend:paid_search"


def test_loaded_state_is_continued() -> None:
    first = fold([(0, parse_event(event_doc("purchase", event_id="a"), now=NOW))], {})
    second = fold(
        [(0, parse_event(event_doc("purchase", event_id="b", order_id="o-2"), now=NOW))],
        first.states,
    )
    assert second.states["cust-1"].purchases == 2
    assert second.states["cust-1"].stage is Stage.RETENTION
