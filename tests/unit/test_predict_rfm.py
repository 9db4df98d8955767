"""The repeat-purchase summary: one transaction a UTC day, the calibration end included,
times in weeks (or any unit)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from clm_predict.rfm import day_number, summary_from_transactions

D0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def test_purchases_of_one_day_are_one_transaction_with_their_sum() -> None:
    s = summary_from_transactions(
        [
            ("a", D0, Decimal("10")),
            ("a", D0 + timedelta(hours=5), Decimal("5")),  # same day: the first transaction
            ("a", D0 + timedelta(days=7), Decimal("20")),
            ("a", D0 + timedelta(days=7, hours=1), Decimal("2")),
            ("a", D0 + timedelta(days=14), Decimal("8")),
        ],
        calibration_end=date(2025, 1, 29),
    )
    assert s.customer_ids == ("a",)
    assert list(s.frequency) == [2.0]
    assert list(s.recency) == [2.0]  # 14 days
    assert list(s.age) == [4.0]  # 2025-01-01 .. 2025-01-29
    assert list(s.monetary) == [15.0]  # (22 + 8) / 2: the first day is left out


def test_the_day_is_the_utc_day() -> None:
    east = timezone(timedelta(hours=9))
    late = datetime(2025, 1, 2, 1, 0, tzinfo=east)  # 2025-01-01 16:00 UTC
    assert day_number(late) == day_number(date(2025, 1, 1))
    assert day_number(datetime(2025, 1, 1, 23, 59)) == day_number(date(2025, 1, 1))  # naive: UTC
    s = summary_from_transactions([("a", D0, 1.0), ("a", late, 2.0)], unit_days=1)
    assert list(s.frequency) == [0.0]
    assert list(s.monetary) == [0.0]


def test_the_calibration_end_is_included_and_later_days_are_not() -> None:
    rows = [
        ("a", D0, 1.0),
        ("a", datetime(2025, 1, 31, 23, 0, tzinfo=UTC), 3.0),  # on the end day: in
        ("a", datetime(2025, 2, 1, 0, 0, tzinfo=UTC), 5.0),  # the day after: out
        ("b", datetime(2025, 2, 2, tzinfo=UTC), 7.0),  # first bought after the end: left out
    ]
    s = summary_from_transactions(rows, calibration_end=date(2025, 1, 31), unit_days=1)
    assert s.customer_ids == ("a",)
    assert (s.frequency[0], s.recency[0], s.age[0], s.monetary[0]) == (1.0, 30.0, 30.0, 3.0)


def test_without_a_calibration_end_it_is_the_last_purchase_day() -> None:
    rows = [("a", D0, 1.0), ("b", D0 + timedelta(days=70), 2.0)]
    s = summary_from_transactions(rows)
    assert dict(zip(s.customer_ids, s.age, strict=True)) == {"a": 10.0, "b": 0.0}
    assert s.repeat_customers == 0
    assert len(s) == 2


def test_a_bad_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="unit_days"):
        summary_from_transactions([("a", D0, 1.0)], unit_days=0)
