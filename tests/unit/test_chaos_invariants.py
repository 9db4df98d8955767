"""The fault-injection invariant checker, on hand-made inputs: it passes a clean run and names
each way a broken one breaks it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.chaos.invariants import DeadLetter, Expected, Observed, assert_invariant, violations

A1, A2, B1, S1, U1 = ("shop", "a1"), ("shop", "a2"), ("shop", "b1"), ("shop", "s1"), ("shop", "u1")
EXPECTED = Expected(
    sent={A1: "ann", A2: "ann", B1: "bob", S1: None, U1: "bob"},
    acked={A1, A2, B1, S1},  # U1 got a 503: it may be applied or not
    stages={"ann": "retention", "bob": "conversion"},
    poison={(1, 7): "undecodable"},
)
CLEAN = Observed(
    processed=[A1, A2, B1, S1],
    logged=[(A1, "ann"), (A2, "ann"), (B1, "bob")],
    customer_events={"ann": 2, "bob": 1},
    stages={"ann": "retention", "bob": "conversion"},
    offsets={"events": {0: 10, 1: 8}, "lifecycle": {0: 4}},
    log_end={"events": {0: 10, 1: 8}, "lifecycle": {0: 4}},
    dlq=[DeadLetter(1, 7, "undecodable: expected value at line 1")],
    metrics_records=["shop:a1", "shop:a2", "shop:b1", "shop:s1", "time:ann:2024"],
    kpi_events=4,
)


def test_a_clean_run_holds() -> None:
    assert violations(EXPECTED, CLEAN) == []
    assert_invariant(EXPECTED, CLEAN)


def test_an_unacknowledged_event_may_be_applied_once() -> None:
    observed = replace(
        CLEAN,
        processed=[*CLEAN.processed, U1],
        logged=[*CLEAN.logged, (U1, "bob")],
        customer_events={"ann": 2, "bob": 2},
        metrics_records=[*(CLEAN.metrics_records or []), "shop:u1"],
        kpi_events=5,
    )
    assert violations(EXPECTED, observed) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"processed": [A1, B1, S1]}, "lost: acknowledged events never applied: ('shop', 'a2')"),
        ({"processed": [A1, A1, A2, B1, S1]}, "doubled: events claimed more than once"),
        ({"processed": [A1, A2, B1, S1, ("shop", "zz")]}, "phantom"),
        ({"logged": [(A1, "ann"), (A1, "ann"), (A2, "ann"), (B1, "bob")]}, "doubled: events in"),
        ({"logged": [(A1, "ann"), (A2, "bob"), (B1, "bob")]}, "logged under another customer"),
        ({"logged": [(A1, "ann"), (B1, "bob")]}, "missing from the customer's log"),
        ({"customer_events": {"ann": 3, "bob": 1}}, "('ann', 3, 2)"),
        ({"customer_events": {"ann": 2, "bob": 1, "eve": 1}}, "('eve', 1, 0)"),
        ({"stages": {"ann": "loyalty", "bob": "conversion"}}, "('ann', 'loyalty', 'retention')"),
        ({"stages": {"ann": "retention"}}, "('bob', None, 'conversion')"),
        ({"offsets": {"events": {0: 10, 1: 7}, "lifecycle": {0: 4}}}, "events not at the log end"),
        ({"offsets": {"events": {0: 10, 1: 8}}}, "lifecycle not at the log end (partition, sto"),
        ({"dlq": []}, "poison records missing from the DLQ: (1, 7)"),
        ({"dlq": [*CLEAN.dlq, DeadLetter(0, 3, "x")]}, "not poison: (0, 3)"),
        ({"dlq": [DeadLetter(1, 7, "boom")]}, "reasons not saying why"),
        ({"metrics_records": ["shop:a1", "shop:a2", "shop:b1"]}, "metrics never counted"),
        ({"metrics_records": ["shop:a1", "shop:a1"]}, "counted twice by metrics"),
        ({"kpi_events": 5}, "events KPI is 5, 4 events applied"),
    ],
)
def test_each_broken_promise_is_named(change: dict[str, object], says: str) -> None:
    found = violations(EXPECTED, replace(CLEAN, **change))  # type: ignore[arg-type]
    assert any(says in v for v in found), found
    with pytest.raises(AssertionError, match="the invariant does not hold"):
        assert_invariant(EXPECTED, replace(CLEAN, **change))  # type: ignore[arg-type]


def test_an_erased_customer_must_leave_no_trace() -> None:
    expected = replace(EXPECTED, erased=frozenset({"bob"}), stages={"ann": "retention"})
    gone = replace(
        CLEAN,
        processed=[A1, A2, S1],
        logged=[(A1, "ann"), (A2, "ann")],
        customer_events={"ann": 2},
        stages={"ann": "retention"},
        kpi_events=None,
    )
    assert violations(expected, gone) == []
    back = violations(expected, replace(gone, stages={"ann": "retention", "bob": "reach"}))
    assert any("erased customers are back: 'bob'" in v for v in back), back
    replayed = violations(expected, replace(gone, processed=[A1, A2, S1, B1]))
    assert any("erased customers' events applied again" in v for v in replayed), replayed
