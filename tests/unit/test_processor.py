"""Folding batches: one state per customer, records for every event, and the engine's strategy
(incremental in order, rebuild on late events) giving the same answer as a full rebuild."""

from __future__ import annotations

import collections
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_domain.events import Event, parse_event
from clm_domain.lifecycle import (
    CustomerState,
    Stage,
    advance,
    apply_event,
    customer_key,
    event_order,
    rebuild,
)
from clm_domain.rules import LifecycleRules
from clm_metrics.buckets import BucketKey, customer_increments, event_increments, increments
from clm_stage_engine.processor import Item, first_of_each, fold, fold_timeline, needs_history
from clm_stage_engine.records import sweep_item
from tests.factories import NOW, event_doc
from tests.unit.test_lifecycle import STEP_TYPES, T0

RULES = LifecycleRules()
DAY1, DAY2 = "2026-11-01T10:00:00Z", "2026-11-20T10:00:00Z"


def item(doc: dict[str, object], tag: int = 0) -> Item[int]:
    event = parse_event(doc, now=NOW)
    return Item.of(tag, event, customer_key(event))


def test_a_hot_customer_folds_to_one_state_and_every_event_gets_a_record() -> None:
    items = [
        item(event_doc("site_visit", event_id="e1", occurred_at="2026-11-23T10:00:00Z")),
        item(event_doc("signup", event_id="e2", occurred_at="2026-11-23T10:01:00Z")),
        item(event_doc("purchase", event_id="e3", occurred_at="2026-11-23T10:02:00Z")),
        item(event_doc("site_visit", customer_id="other", event_id="e4")),
        item(event_doc("marketing_spend", customer_id=None, event_id="e5")),
    ]
    result = fold(items, {}, RULES, now=NOW)
    assert set(result.states) == {"cust-1", "other"}
    assert result.states["cust-1"].stage is Stage.CONVERSION
    assert [t.to_stage for t in result.transitions if t.customer_id == "cust-1"] == [
        Stage.REACH,
        Stage.ACQUISITION,
        Stage.CONVERSION,
    ]
    assert len(result.applied) == 5
    records = {orjson.loads(p)["record_id"]: orjson.loads(p) for _, p in result.outbox}
    purchase = records["shop:e3"]
    assert purchase["stage_before"] == "acquisition"
    assert purchase["stage_after"] == "conversion"
    assert purchase["first_purchase"] is True
    assert purchase["customer"]["revenue"] == "59.90"
    assert records["shop:e5"]["customer"] is None


def test_a_late_event_needs_the_history_and_the_rebuild_restates_the_customer() -> None:
    first = fold(
        [item(event_doc("purchase", event_id="p", occurred_at="2026-11-20T10:00:00Z"))],
        {},
        RULES,
        now=NOW,
    )
    late = item(
        event_doc("ad_click", event_id="a", occurred_at="2026-11-01T10:00:00Z", channel="social")
    )
    assert needs_history([late], first.states, {}) == {"cust-1"}
    history = [i.event for i in first.applied]
    result = fold([late], first.states, RULES, now=NOW, histories={"cust-1": [history]})
    state = result.states["cust-1"]
    assert state.first_channel == "social"
    assert state.first_seen_at == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert state.stage is Stage.CONVERSION
    assert result.transitions == []
    record, restatement = [orjson.loads(p) for _, p in result.outbox]
    assert record["stage_before"] == record["stage_after"] == "conversion"
    assert record["restated"] is True
    assert restatement["kind"] == "restatement"
    assert restatement["record_id"] == "restatement:cust-1@shop:a#0"
    (old,) = restatement["retract"]
    (new,) = restatement["add"]
    assert [i["customer"]["first_channel"] for i in old["items"]] == ["email"]  # the purchase's
    assert [i["customer"]["first_channel"] for i in new["items"]] == ["social", "social"]
    assert (old["stage"], new["stage"]) == ("conversion", "conversion")


def test_a_merge_folds_the_anonymous_history_into_the_customer() -> None:
    anon = fold(
        [
            item(
                event_doc(
                    "ad_click", customer_id=None, event_id="a1", occurred_at="2026-11-01T10:00:00Z"
                )
                | {"anonymous_id": "anon-1"}
            )
        ],
        {},
        RULES,
        now=NOW,
    )
    identify = item(
        event_doc(
            "identify", event_id="i1", occurred_at="2026-11-02T10:00:00Z", traits={"email": "x@y"}
        )
        | {"anonymous_id": "anon-1"}
    )
    histories = {"cust-1": [[], [i.event for i in anon.applied]]}
    result = fold(
        [identify], {}, RULES, now=NOW, histories=histories, merges={"cust-1": ["anon-1"]}
    )
    state = result.states["cust-1"]
    assert state.first_seen_at == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert state.stage is Stage.ACQUISITION
    assert state.events == 2
    assert result.transitions[-1].reason == "identity merge"


def test_loaded_state_is_continued() -> None:
    first = fold([item(event_doc("purchase", event_id="a"))], {}, RULES, now=NOW)
    second = fold(
        [
            item(
                event_doc(
                    "purchase", event_id="b", order_id="o-2", occurred_at="2026-11-23T11:30:00Z"
                )
            )
        ],
        first.states,
        RULES,
        now=NOW,
    )
    assert second.states["cust-1"].purchases == 2
    assert second.states["cust-1"].stage is Stage.RETENTION


picks = st.lists(
    st.tuples(st.sampled_from(range(len(STEP_TYPES))), st.integers(0, 400)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(picks, st.randoms(use_true_random=False), st.integers(1, 5), st.integers(0, 10))
def test_any_arrival_order_batching_and_duplicates_give_the_rebuilt_state(
    steps: list[tuple[int, int]], rnd: random.Random, batch_size: int, repeats: int
) -> None:
    """The engine's strategy (drop repeats within a batch and what was already processed,
    fold in order, rebuild on late events; the sweeper passing between batches) equals a full rebuild of the set of events,
    whatever the arrival order, the batching and the duplicates; each event's flags, as its
    record and then the restatements said them, are those of the event-time order; and what
    the metrics service counts from every record (then a last sweep) equals the figures of
    the events folded in event-time order, metric by metric, minute by minute."""
    events: list[Event] = []
    for n, (i, day) in enumerate(steps):
        type_, props = STEP_TYPES[i]
        at = (T0 + timedelta(days=day)).isoformat()
        events.append(
            parse_event(event_doc(type_, event_id=f"e{n:03d}", occurred_at=at, **props), now=NOW)
        )
    arrival = list(events) + [rnd.choice(events) for _ in range(repeats)]
    rnd.shuffle(arrival)
    now = T0 + timedelta(days=1000)
    loaded: dict[str, CustomerState] = {}
    stored: list[Event] = []
    said: dict[str, tuple[bool, ...]] = {}
    counted: dict[BucketKey, Decimal] = {}
    processed: set[tuple[str, str]] = set()
    for start in range(0, len(arrival), batch_size):
        unique = first_of_each([(0, e) for e in arrival[start : start + batch_size]])
        fresh = [e for _, e in unique if (e.source, e.event_id) not in processed]
        processed.update((e.source, e.event_id) for e in fresh)
        batch = [Item.of(0, e, "cust-1") for e in fresh]
        rebuild_keys = needs_history(batch, loaded, {})
        histories = {"cust-1": [list(stored)]} if rebuild_keys else {}
        result = fold(batch, loaded, RULES, now=now, histories=histories)
        loaded.update(result.states)
        if "cust-1" in loaded and rnd.random() < 0.3:  # the sweeper passes, at some time
            swept, moves = advance(
                loaded["cust-1"], T0 + timedelta(days=rnd.randint(0, 700)), RULES
            )
            if moves:
                for key, value in customer_increments(sweep_item(loaded["cust-1"], swept, moves)):
                    counted[key] = counted.get(key, Decimal(0)) + value
                loaded["cust-1"] = swept
        stored.extend(i.event for i in result.applied)
        for _, payload in result.outbox:
            said_by(orjson.loads(payload), said)
            for key, value in increments(orjson.loads(payload)):
                counted[key] = counted.get(key, Decimal(0)) + value
    final, moves = advance(loaded["cust-1"], now, RULES)
    assert final == rebuild("cust-1", events, RULES, now)
    truth = event_time_flags(events)
    assert said == truth
    if moves:  # the sweeper's record
        for key, value in customer_increments(sweep_item(loaded["cust-1"], final, moves)):
            counted[key] = counted.get(key, Decimal(0)) + value
    in_order, _ = fold_timeline("cust-1", events, RULES, until=now)
    expected: dict[BucketKey, Decimal] = {}
    for item_ in in_order.items:
        parts = customer_increments(item_)
        if item_["event"] is not None:
            parts += event_increments(item_)
        for key, value in parts:
            expected[key] = expected.get(key, Decimal(0)) + value
    assert {k: v for k, v in counted.items() if v} == {k: v for k, v in expected.items() if v}
    # in particular the event-time order's flags
    totals = collections.Counter({m: 0 for m in FLAG_METRICS})
    for key, value in counted.items():
        totals[key.metric] += int(value)
    assert [totals[m] for m in FLAG_METRICS] == [
        sum(flags[i] for flags in truth.values()) for i in range(len(FLAGS))
    ]


FLAGS = ("first_purchase", "repeat_purchase", "reactivation")
FLAG_METRICS = ("new_customers", "repeat_purchases", "reactivations")  # what each flag counts


def said_by(record: dict[str, Any], said: dict[str, tuple[bool, ...]]) -> None:
    """Book a record's flags per event id; a restatement must take back what was said."""
    if record["kind"] == "event":
        said[record["record_id"]] = tuple(record[f] for f in FLAGS)
    elif record["kind"] == "restatement":
        for side in ("retract", "add"):
            for timeline in record[side]:
                for item_ in timeline["items"]:
                    event = item_["event"]
                    if event is None:
                        continue
                    ident = f"{event['source']}:{event['event_id']}"
                    flags = tuple(item_[f] for f in FLAGS)
                    if side == "retract":
                        assert said[ident] == flags
                    else:
                        said[ident] = flags


def event_time_flags(events: list[Event]) -> dict[str, tuple[bool, ...]]:
    out: dict[str, tuple[bool, ...]] = {}
    state: CustomerState | None = None
    for event in sorted(events, key=event_order):
        applied = apply_event(state, event, RULES)
        state = applied.state
        out[f"{event.source}:{event.event_id}"] = tuple(getattr(applied, f) for f in FLAGS)
    return out


def test_a_late_first_purchase_restates_the_purchase_that_was_first() -> None:
    """Published: p2 as the first purchase. A purchase from before arrives: its record says
    first purchase, and the restatement takes back p2 as first and adds p1 as first and p2 as
    a repeat purchase, naming the cause."""
    first = fold(
        [item(event_doc("purchase", event_id="p2", order_id="o2", occurred_at=DAY2))],
        {},
        RULES,
        now=NOW,
    )
    late = item(event_doc("purchase", event_id="p1", order_id="o1", occurred_at=DAY1))
    history = [[i.event for i in first.applied]]
    result = fold([late], first.states, RULES, now=NOW, histories={"cust-1": history})
    records = [orjson.loads(p) for _, p in result.outbox]
    assert [(r["kind"], r["record_id"]) for r in records] == [
        ("event", "shop:p1"),
        ("restatement", "restatement:cust-1@shop:p1#0"),
    ]
    new, fix = records
    assert (new["first_purchase"], new["repeat_purchase"], new["restated"]) == (True, False, True)
    assert fix["reason"] == "late event"
    assert fix["customer_id"] == "cust-1"
    assert fix["events_too"] is False
    assert flags_of_items(fix["retract"]) == [("p2", True, False)]
    assert flags_of_items(fix["add"]) == [("p1", True, False), ("p2", False, True)]
    (old,) = fix["retract"]
    assert old["items"][0]["customer"]["purchases"] == 1
    assert fix["add"][0]["items"][1]["customer"]["purchases"] == 2


def flags_of_items(timelines: list[dict[str, Any]]) -> list[tuple[str, bool, bool]]:
    return [
        (i["event"]["event_id"], i["first_purchase"], i["repeat_purchase"])
        for t in timelines
        for i in t["items"]
        if i["event"] is not None
    ]


def test_a_late_visit_restates_the_first_touch() -> None:
    first = fold([item(event_doc("purchase", event_id="p2", occurred_at=DAY2))], {}, RULES, now=NOW)
    late = item(event_doc("site_visit", event_id="v1", occurred_at=DAY1, channel="email"))
    result = fold(
        [late], first.states, RULES, now=NOW, histories={"cust-1": [[first.applied[0].event]]}
    )
    records = [orjson.loads(p) for _, p in result.outbox]
    assert [r["kind"] for r in records] == ["event", "restatement"]
    assert [i["customer"]["first_channel"] for i in records[1]["add"][0]["items"]] == [
        "email",
        "email",
    ]


def test_a_merge_restates_the_anonymous_profiles_first_purchase() -> None:
    """The customer bought on day 1; an anonymous profile bought on day 2 (its record: a first
    purchase, of that profile). Once merged, that purchase is the customer's second: the
    restatement takes back both profiles' timelines and adds the merged one."""
    own = fold([item(event_doc("purchase", event_id="p1", occurred_at=DAY1))], {}, RULES, now=NOW)
    anon_doc = event_doc("purchase", customer_id=None, event_id="p2", order_id="o2")
    anon = fold(
        [item(anon_doc | {"anonymous_id": "anon-1", "occurred_at": DAY2})], {}, RULES, now=NOW
    )
    assert orjson.loads(anon.outbox[0][1])["first_purchase"] is True
    identify = item(
        event_doc("identify", event_id="i1", occurred_at=NOW.isoformat(), traits={"email": "x@y"})
        | {"anonymous_id": "anon-1"}
    )
    groups = [[i.event for i in own.applied], [i.event for i in anon.applied]]
    result = fold(
        [identify],
        own.states,
        RULES,
        now=NOW,
        histories={"cust-1": groups},
        merges={"cust-1": ["anon-1"]},
        merged_states=anon.states,
    )
    (fix,) = [r for r in (orjson.loads(p) for _, p in result.outbox) if r["kind"] == "restatement"]
    assert (fix["record_id"], fix["reason"]) == ("restatement:cust-1@shop:i1#0", "identity merge")
    assert [(t["customer_id"], t["stage"]) for t in fix["retract"]] == [
        ("cust-1", "conversion"),
        ("anon-1", "conversion"),
    ]
    assert flags_of_items(fix["retract"]) == [("p1", True, False), ("p2", True, False)]
    assert flags_of_items(fix["add"]) == [
        ("p1", True, False),
        ("p2", False, True),
        ("i1", False, False),
    ]
    assert fix["add"][0]["customer_id"] == "cust-1"
