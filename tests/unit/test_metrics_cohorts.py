"""Cohort activity from signed purchases: a customer counts once in a period while it has a
purchase there, in the cohort of its first purchase; restatements move and remove it."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from clm_metrics.cohorts import Activity, ActivityKey, CohortRow, cohort_changes, periods_between

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)


def test_a_second_purchase_in_a_period_counts_the_customer_once() -> None:
    states, counts = cohort_changes({}, [("month", "a", FEB, JAN, 1), ("month", "a", FEB, JAN, 1)])
    assert states == {("month", "a", FEB): Activity(2, JAN)}
    assert counts == {("month", JAN, 1): 1}


def test_a_late_first_purchase_moves_the_customer_to_an_earlier_cohort() -> None:
    """Counted in February's cohort; a January purchase arrives late: the February purchase
    is taken back from February's cohort and added in January's."""
    known = {("month", "a", FEB): Activity(1, FEB)}
    rows: list[CohortRow] = [
        ("month", "a", FEB, FEB, -1),
        ("month", "a", JAN, JAN, 1),
        ("month", "a", FEB, JAN, 1),
    ]
    states, counts = cohort_changes(known, rows)
    assert states == {("month", "a", FEB): Activity(1, JAN), ("month", "a", JAN): Activity(1, JAN)}
    assert counts == {("month", FEB, 0): -1, ("month", JAN, 1): 1, ("month", JAN, 0): 1}


def test_taking_back_the_last_purchase_removes_the_customer() -> None:
    known = {("month", "a", MAR): Activity(1, JAN)}
    states, counts = cohort_changes(known, [("month", "a", MAR, JAN, -1)])
    assert states == {("month", "a", MAR): None}
    assert counts == {("month", JAN, 2): -1}


def test_a_row_from_before_cohorts_were_stored_takes_the_retracted_cohort() -> None:
    known = {("month", "a", MAR): Activity(1, None)}
    states, counts = cohort_changes(known, [("month", "a", MAR, FEB, -1)])
    assert states == {("month", "a", MAR): None}
    assert counts == {("month", FEB, 1): -1}


months = st.sampled_from([JAN, FEB, MAR])
COHORT = {"a": JAN, "b": FEB, "c": JAN}  # each customer's first purchase's month
purchases = st.lists(
    st.tuples(st.sampled_from("abc"), months).map(lambda p: (p[0], p[1], COHORT[p[0]])),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(purchases, st.lists(st.integers(0, 11), max_size=6), st.integers(1, 4))
def test_any_adds_and_retractions_in_any_batching_equal_counting_the_survivors(
    bought: list[tuple[str, date, date]], retracted: list[int], batch: int
) -> None:
    """Add every purchase, take some back, in batches: the cells equal a count of the
    purchases that remain (each customer once per period)."""
    rows: list[CohortRow] = [("month", w, at, c, 1) for w, at, c in bought]
    gone = sorted({i for i in retracted if i < len(bought)})
    rows += [("month", bought[i][0], bought[i][1], bought[i][2], -1) for i in gone]
    known: dict[ActivityKey, Activity] = {}
    cells: dict[tuple[str, date, int], int] = {}
    for n in range(0, len(rows), batch):
        states, counts = cohort_changes(known, rows[n : n + batch])
        for key, state in states.items():
            if state is None:
                known.pop(key, None)
            else:
                known[key] = state
        for cell, v in counts.items():
            cells[cell] = cells.get(cell, 0) + v
    kept = [p for i, p in enumerate(bought) if i not in gone]
    truth: dict[tuple[str, date, int], int] = {}
    for w, at in {(w, at) for w, at, _ in kept}:
        c = COHORT[w]
        cell = ("month", c, periods_between("month", c, at))
        truth[cell] = truth.get(cell, 0) + 1
    assert {k: v for k, v in cells.items() if v} == truth
    assert all(v >= 0 for v in cells.values())
