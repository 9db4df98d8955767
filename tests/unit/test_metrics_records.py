"""Lifecycle records without an event (sweeper moves, merges, erasures) as the stage engine
writes them, counted by the metrics service: flows, stays and stage counts stay consistent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from clm_common.events import parse_event
from clm_common.lifecycle import Stage, advance, apply_event
from clm_common.rules import LifecycleRules
from clm_metrics.buckets import increments, sketch_items, stage_deltas
from clm_metrics.formulas import flows, stage_net
from clm_stage_engine.records import lifecycle_record, removal_record
from tests.factories import event_doc

RULES = LifecycleRules()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def totals(records: list[dict[str, object]]) -> dict[tuple[str, str, str, str], Decimal]:
    out: dict[tuple[str, str, str, str], Decimal] = {}
    for r in records:
        for key, value in increments(r):
            k = (key.metric, key.source, key.channel, key.currency)
            out[k] = out.get(k, Decimal(0)) + value
    return out


def as_totals(
    t: dict[tuple[str, str, str, str], Decimal],
) -> dict[tuple[str, str, str, str], Decimal]:
    return t


def test_a_sweeper_record_counts_each_move_as_a_flow_with_its_stay() -> None:
    doc = event_doc("purchase", occurred_at=T0.isoformat(), channel="social")
    state = apply_event(None, parse_event(doc), RULES).state
    after, moves = advance(state, T0 + timedelta(days=200), RULES)
    record = orjson.loads(
        orjson.dumps(
            {
                "kind": "time",
                "record_id": "time:x",
                "event": None,
                "customer": {"first_source": "shop", "first_channel": "social"},
                "stage_before": state.stage.value,
                "stage_before_entered_at": state.stage_entered_at.isoformat(),
                "stage_after": after.stage.value,
                "transitions": [
                    {
                        "from": m.from_stage.value if m.from_stage else None,
                        "to": m.to_stage.value,
                        "at": m.at.isoformat(),
                    }
                    for m in moves
                ],
            }
        )
    )
    names = {key.metric: key for key, _ in increments(record)}
    assert "flow:conversion:at_risk" in names
    assert "flow:at_risk:churned" in names
    assert names["flow:at_risk:churned"].bucket_start == T0 + timedelta(days=180)
    assert names["flow:conversion:at_risk"].channel == "social"
    assert any(m.startswith("stay:conversion:") for m in names)
    assert any(m.startswith("stay:at_risk:") for m in names)
    assert sketch_items(record) == []
    assert stage_deltas([record]) == {"conversion": -1, "churned": 1}


def test_a_profile_leaving_is_a_flow_out_and_a_stage_count_down() -> None:
    merged = orjson.loads(removal_record("identity_merge", "a>c", "a", "reach", merged_into="c"))
    erased = orjson.loads(removal_record("erasure", "h", "c", "retention", mode="erase"))
    kept = orjson.loads(
        removal_record("erasure", "h2", "d", "loyalty", mode="anonymise", stage_after="loyalty")
    )
    assert stage_deltas([merged, erased, kept]) == {"reach": -1, "retention": -1}
    metrics = [key.metric for r in (merged, erased, kept) for key, _ in increments(r)]
    assert sorted(metrics) == ["flow:reach:", "flow:retention:"]
    flow_totals = {
        ("flow:reach:", "shop", "", ""): Decimal(1),
        ("flow:retention:", "shop", "", ""): Decimal(1),
        ("flow::conversion", "shop", "", ""): Decimal(2),
    }
    assert flows(flow_totals) == {("reach", ""): 1, ("retention", ""): 1, ("", "conversion"): 2}
    net = stage_net(flow_totals)
    assert net["reach"] == -1
    assert net["conversion"] == 2
    assert "" not in net


def test_an_event_record_still_counts_its_event_and_its_flow() -> None:
    doc = event_doc("purchase", occurred_at=T0.isoformat())
    event = parse_event(doc)
    applied = apply_event(None, event, RULES)
    record = orjson.loads(lifecycle_record(event, None, applied))
    metrics = {key.metric for key, _ in increments(record)}
    assert {"events", "events:purchase", "orders", "revenue", "flow::conversion"} <= metrics
    assert stage_deltas([record]) == {Stage.CONVERSION.value: 1}
