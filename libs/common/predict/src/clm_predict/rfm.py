"""The repeat-purchase summary the models are fitted on, built from transactions.

Each customer is summarised as in the BG/NBD and Gamma-Gamma papers, with one transaction a
day: the purchases of one UTC day count as one transaction whose value is their sum.

- ``frequency`` x: the number of repeat purchase days (distinct purchase days - 1);
- ``recency`` t_x: from the first purchase day to the last one;
- ``age`` T: from the first purchase day to the calibration end;
- ``monetary`` m: the mean value of the repeat transactions (the first one excluded), 0 when
  x = 0.

Times are in units of ``unit_days`` days (7: weeks). The calibration end is a day, included:
transactions on later days are left out, and T counts the days from the first purchase day to
it. A calibration ending 1997-09-30 therefore covers 1997-01-01 .. 1997-09-30, 273 days or 39
weeks, and a customer who first bought on 1997-01-01 has T = 272 / 7 = 38.86 weeks. Without a
calibration end, it is the last purchase day in the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

WEEK = 7.0
_EPOCH = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class RfmSummary:
    """One entry per customer (the arrays share their order with ``customer_ids``)."""

    customer_ids: tuple[str, ...]
    frequency: FloatArray
    recency: FloatArray
    age: FloatArray
    monetary: FloatArray
    unit_days: float = WEEK

    def __len__(self) -> int:
        return len(self.frequency)

    @property
    def repeat_customers(self) -> int:
        return int(np.count_nonzero(self.frequency > 0))


def day_number(at: datetime | date) -> int:
    """The UTC day of ``at`` as days since 1970-01-01 (a naive datetime is taken as UTC)."""
    if isinstance(at, datetime):
        at = (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)).date()
    return at.toordinal() - _EPOCH


def summary_from_transactions(
    transactions: Iterable[tuple[str, datetime, Decimal | float]],
    *,
    calibration_end: date | None = None,
    unit_days: float = WEEK,
) -> RfmSummary:
    """The summary of ``(customer_id, when, amount)`` transactions (any order)."""
    ids: dict[str, int] = {}
    customers: list[int] = []
    days: list[int] = []
    amounts: list[float] = []
    for customer_id, at, amount in transactions:
        customers.append(ids.setdefault(customer_id, len(ids)))
        days.append(day_number(at))
        amounts.append(float(amount))
    end = None if calibration_end is None else day_number(calibration_end)
    return summary_from_arrays(
        tuple(ids),
        np.asarray(customers, dtype=np.int64),
        np.asarray(days, dtype=np.int64),
        np.asarray(amounts, dtype=np.float64),
        end_day=end,
        unit_days=unit_days,
    )


def summary_from_arrays(
    customer_ids: tuple[str, ...],
    customer: IntArray,
    day: IntArray,
    amount: FloatArray,
    *,
    end_day: int | None = None,
    unit_days: float = WEEK,
) -> RfmSummary:
    """The summary of transactions given as arrays: ``customer`` indexes ``customer_ids``,
    ``day`` is a day number (days since 1970-01-01 in UTC), ``end_day`` the calibration end
    (included; default the last day). Customers without a transaction up to it are left out.
    """
    if unit_days <= 0:
        raise ValueError("unit_days must be > 0")
    if end_day is None:
        end_day = int(day.max()) if len(day) else 0
    keep = day <= end_day
    customer, day, amount = customer[keep], day[keep], amount[keep]
    # one transaction a day: sum the amounts of each (customer, day)
    span = np.int64(int(day.max()) - int(day.min()) + 1) if len(day) else np.int64(1)
    key = customer * span + (day - (day.min() if len(day) else 0))
    keys, first_index, inverse = np.unique(key, return_index=True, return_inverse=True)
    day_value = np.bincount(inverse, weights=amount, minlength=len(keys))
    day_customer = customer[first_index]
    day_of = day[first_index]
    # the keys are sorted by customer, then by day
    present, starts, counts = np.unique(day_customer, return_index=True, return_counts=True)
    first_day = day_of[starts]
    last_day = day_of[starts + counts - 1]
    total = np.add.reduceat(day_value, starts) if len(starts) else np.zeros(0)
    repeat_value = total - day_value[starts]
    frequency = (counts - 1).astype(np.float64)
    monetary = np.divide(
        repeat_value, frequency, out=np.zeros_like(repeat_value), where=frequency > 0
    )
    return RfmSummary(
        customer_ids=tuple(customer_ids[i] for i in present),
        frequency=frequency,
        recency=(last_day - first_day) / unit_days,
        age=(end_day - first_day) / unit_days,
        monetary=monetary,
        unit_days=unit_days,
    )
