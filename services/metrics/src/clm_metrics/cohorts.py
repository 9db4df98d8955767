"""Retention cohorts from signed purchases (pure).

A customer counts in a ``(period, cohort, periods since)`` cell while it has at least one
purchase in that period; its cohort is the period of its first purchase. Restatements take
purchases back (with the cohort they were counted in) and add them again, so each customer's
period keeps a purchase count and the cohort it is counted in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from clm_metrics.buckets import instant
from clm_metrics.members import customer_id_of

__all__ = [
    "Activity",
    "ActivityKey",
    "CohortRow",
    "cohort_changes",
    "cohort_rows",
    "period_start",
    "periods_between",
    "retention_table",
]


def period_start(period: str, at: datetime) -> date:
    day = at.astimezone(UTC).date()
    if period == "month":
        return day.replace(day=1)
    return day - timedelta(days=day.weekday())


CohortRow = tuple[str, str, date, date, int]


def cohort_rows(record: Mapping[str, Any]) -> list[CohortRow]:
    """``(period, customer, period of the purchase, cohort, +1/-1)`` for monthly and weekly
    cohorts: a purchase counts its customer active in its period, in the cohort of the
    period of the customer's first purchase (``converted_at``); a restatement takes its
    ``retract`` purchases back and adds its ``add`` ones."""
    if record.get("kind") == "restatement":
        out: list[CohortRow] = []
        for side, sign in (("retract", -1), ("add", 1)):
            for timeline in record.get(side) or ():
                who = str(timeline["customer_id"])
                for item in timeline["items"]:
                    out.extend(_cohort_rows(item, who, sign))
        return out
    if record.get("restated"):
        return []
    customer = customer_id_of(record)
    return [] if customer is None else _cohort_rows(record, customer, 1)


def _cohort_rows(record: Mapping[str, Any], who: str, sign: int) -> list[CohortRow]:
    event = record.get("event")
    facts = record.get("customer") or {}
    if event is None or event["type"] != "purchase" or not facts.get("converted_at"):
        return []
    at, converted = instant(event["occurred_at"]), instant(facts["converted_at"])
    return [
        (period, who, period_start(period, at), period_start(period, converted), sign)
        for period in ("month", "week")
    ]


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


def retention_table(rows: Sequence[tuple[date, int, int]]) -> list[dict[str, Any]]:
    """``(cohort, periods since, purchasing customers)`` rows (by cohort, then period) as the
    retention table: each cohort's size (its customers in period 0) and each period's share."""
    out: dict[date, dict[str, Any]] = {}
    for cohort, since, customers in rows:
        entry = out.setdefault(
            cohort, {"cohort": cohort.isoformat(), "customers": 0, "periods": []}
        )
        if since == 0:
            entry["customers"] = customers
    for cohort, since, customers in rows:
        entry = out[cohort]
        size = entry["customers"]
        entry["periods"].append(
            {
                "periods_since": since,
                "purchasing_customers": customers,
                "share": None
                if not size
                else str((Decimal(customers) / size).quantize(Decimal("0.0001"))),
            }
        )
    return list(out.values())
