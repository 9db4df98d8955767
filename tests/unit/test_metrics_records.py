"""Lifecycle records without an event (sweeper moves, merges, erasures) as the stage engine
writes them, counted by the metrics service: flows, stays and stage counts stay consistent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from clm_domain.events import parse_event
from clm_domain.lifecycle import Stage, Transition, advance, apply_event
from clm_domain.rules import LifecycleRules
from clm_metrics.buckets import increments, stage_deltas
from clm_metrics.formulas import flows, stage_net
from clm_metrics.members import distinct_items
from clm_stage_engine.processor import counted, fold_timeline
from clm_stage_engine.records import (
    lifecycle_record,
    merge_record,
    removal_record,
    restatement_records,
)
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
    assert distinct_items(record) == []
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


def test_an_explicit_merge_restates_both_profiles_as_one_customer() -> None:
    """Survivor in reach, the merged-away customer in conversion. The merge takes back both
    timelines as they were counted (a's lead-less reach, b's own conversion) and adds the
    merged one (reach on the click, conversion on the purchase): the stage counts and every
    flow are then those of one customer who clicked and bought, as if known as one from the
    start. The removal and the survivor's record are informative (``restated``)."""
    click = parse_event(event_doc("ad_click", customer_id="a", occurred_at=T0.isoformat()))
    buy = parse_event(
        event_doc("purchase", customer_id="b", occurred_at=(T0 + timedelta(days=1)).isoformat())
    )
    survivor = apply_event(None, click, RULES).state
    other = apply_event(None, buy, RULES).state
    at = T0 + timedelta(days=2)
    before = [
        *(
            orjson.loads(lifecycle_record(click, None, apply_event(None, click, RULES)))
            for _ in [0]
        ),
        orjson.loads(lifecycle_record(buy, None, apply_event(None, buy, RULES))),
    ]
    merged, _ = fold_timeline("a", [click, buy], RULES, until=at)
    assert merged.state is not None
    assert (survivor.stage, merged.state.stage) == (Stage.REACH, Stage.CONVERSION)
    move = Transition("a", survivor.stage, merged.state.stage, at, "", "merged b")
    retract = counted([("a", survivor, [click]), ("b", other, [buy])], RULES)
    records = [
        orjson.loads(
            removal_record("identity_merge", "b>a", "b", other.stage.value, restated=True)
        ),
        orjson.loads(merge_record("a", "b", survivor, merged.state, move, at)),
        *(
            orjson.loads(r)
            for r in restatement_records(
                "a",
                cause="merge:b>a",
                reason="customer merge",
                retract=retract,
                add=[merged],
                at=at,
            )
        ),
    ]
    assert records[1]["kind"] == "customer_merge"
    assert (records[1]["stage_before"], records[1]["stage_after"]) == ("reach", "conversion")
    # before the merge: reach 1, conversion 1; after it: conversion 1
    assert stage_deltas([*before, *records]) == {"conversion": 1}
    assert stage_deltas(records) == {"reach": -1}
    counted_now = totals([*before, *records])
    assert {s: n for s, n in stage_net(counted_now).items() if n} == {"conversion": 1}
    assert {k[0]: v for k, v in counted_now.items() if k[0].startswith("flow:") and v} == {
        "flow::reach": 1,
        "flow:reach:conversion": 1,
    }
    one_customer = totals(
        [
            orjson.loads(lifecycle_record(click, None, apply_event(None, click, RULES))),
            orjson.loads(lifecycle_record(buy, survivor, apply_event(survivor, buy, RULES))),
        ]
    )
    assert {k: v for k, v in counted_now.items() if v} == {
        k: v for k, v in one_customer.items() if v
    }
    # a merge that leaves the survivor where it was moves nothing
    same = orjson.loads(merge_record("a", "c", merged.state, merged.state, None, at))
    assert stage_deltas([same]) == {}
    assert increments(same) == []


def test_an_event_record_still_counts_its_event_and_its_flow() -> None:
    doc = event_doc("purchase", occurred_at=T0.isoformat())
    event = parse_event(doc)
    applied = apply_event(None, event, RULES)
    record = orjson.loads(lifecycle_record(event, None, applied))
    metrics = {key.metric for key, _ in increments(record)}
    assert {"events", "events:purchase", "orders", "revenue", "flow::conversion"} <= metrics
    assert stage_deltas([record]) == {Stage.CONVERSION.value: 1}


def test_an_event_that_causes_several_moves_counts_each_at_its_own_time() -> None:
    """A purchase after 200 silent days: at risk and churned when they became due, then the
    purchase brings the customer back. Each move is a flow at its own minute, with its stay,
    exactly as if a sweeper had made the first two in between."""
    first = parse_event(event_doc("purchase", occurred_at=T0.isoformat(), channel="social"))
    state = apply_event(None, first, RULES).state
    later = T0 + timedelta(days=200)
    back = parse_event(event_doc("purchase", occurred_at=later.isoformat(), channel="social"))
    applied = apply_event(state, back, RULES)
    assert len(applied.transitions) >= 3
    record = orjson.loads(lifecycle_record(back, state, applied))
    assert [m["to"] for m in record["transitions"]] == [
        t.to_stage.value for t in applied.transitions
    ]
    assert record["transition"] == record["transitions"][-1]

    flows_at = {
        key.metric: key.bucket_start
        for key, _ in increments(record)
        if key.metric.startswith("flow:")
    }
    expected = {
        f"flow:{t.from_stage.value if t.from_stage else ''}:{t.to_stage.value}": t.at.replace(
            second=0, microsecond=0
        )
        for t in applied.transitions
    }
    assert flows_at == expected
    assert flows_at["flow:at_risk:churned"] < later
    stays = [key.metric for key, _ in increments(record) if key.metric.startswith("stay:")]
    assert len(stays) == len(applied.transitions)
    # the net effect on stage counts is the same as the single net move
    net = stage_net(totals([record]))
    assert net.get(Stage.CONVERSION.value) == -1
    assert sum(net.values()) == 0


def test_a_record_without_the_moves_list_still_counts_its_net_move() -> None:
    """Records written before per-move accounting (no ``transitions``) keep counting."""
    event = parse_event(event_doc("purchase", occurred_at=T0.isoformat()))
    record = orjson.loads(lifecycle_record(event, None, apply_event(None, event, RULES)))
    del record["transitions"]
    assert "flow::conversion" in {key.metric for key, _ in increments(record)}
