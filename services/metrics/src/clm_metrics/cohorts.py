"""Retention cohorts from signed purchases (pure).

A customer counts in a ``(period, cohort, periods since)`` cell while it has at least one
purchase in that period; its cohort is the period of its first purchase. Restatements take
purchases back (with the cohort they were counted in) and add them again, so each customer's
period keeps a purchase count and the cohort it is counted in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from clm_metrics.buckets import CohortRow

__all__ = ["Activity", "ActivityKey", "cohort_changes", "periods_between"]


def periods_between(period: str, cohort: date, start: date) -> int:
    if period == "month":
        return (start.year - cohort.year) * 12 + start.month - cohort.month
    return (start - cohort).days // 7


ActivityKey = tuple[str, str, date]  # (period, customer, period start)


@dataclass(frozen=True, slots=True)
class Activity:
    """One customer's purchases in one period, and the cohort they are counted in."""

    purchases: int
    cohort: date | None


def cohort_changes(
    known: Mapping[ActivityKey, Activity], rows: Sequence[CohortRow]
) -> tuple[dict[ActivityKey, Activity | None], dict[tuple[str, date, int], int]]:
    """Pure: the activity rows after a batch's signed purchases (``None``: the row goes) and
    the ``kpi_cohorts`` changes (a customer counts once in a period while it has a purchase
    there, in the cohort of its latest add; a row from before purchases were counted takes
    the cohort a restatement retracts from it)."""
    delta: dict[ActivityKey, int] = {}
    added: dict[ActivityKey, date] = {}
    retracted: dict[ActivityKey, date] = {}
    for period, who, start, cohort, sign in rows:
        key = (period, who, start)
        delta[key] = delta.get(key, 0) + sign
        (added if sign > 0 else retracted)[key] = cohort
    states: dict[ActivityKey, Activity | None] = {}
    counts: dict[tuple[str, date, int], int] = {}

    def count(key: ActivityKey, cohort: date, n: int) -> None:
        slot = (key[0], cohort, periods_between(key[0], cohort, key[2]))
        counts[slot] = counts.get(slot, 0) + n

    for key, change in delta.items():
        old = known.get(key)
        old_n = old.purchases if old is not None else 0
        old_cohort = old.cohort if old is not None else None
        if old_n > 0 and old_cohort is None:  # written before cohorts were stored
            old_cohort = retracted.get(key, added.get(key))
        new_n = max(old_n + change, 0)
        new_cohort = added.get(key, old_cohort)
        if old_n > 0 and old_cohort is not None:
            count(key, old_cohort, -1)
        if new_n > 0 and new_cohort is not None:
            count(key, new_cohort, 1)
        states[key] = Activity(new_n, new_cohort) if new_n > 0 else None
    return states, {k: n for k, n in counts.items() if n != 0}
