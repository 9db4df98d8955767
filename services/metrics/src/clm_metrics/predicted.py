"""The predictive KPIs from the current model and customers' facts (pure; no I/O, no clock).

- ``clv_predicted``: the mean predicted CLV (over the configured horizon and discount) of a
  window's purchasing customers whose one purchase currency is the reporting currency, as
  the stage engine predicts each of them today;
- ``expected_purchases_90d``: the purchases the customer base (every customer who ever
  purchased) is expected to make in the next 90 days, summed.

Each customer's summary is :func:`clm_predict.live.summary_of_facts` of its facts on today's
UTC day, exactly as the stage engine scores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from clm_predict.bgnbd import expected_purchases
from clm_predict.live import NINETY_DAYS, Horizon, ModelVersion, horizon_clv, summary_of_facts

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FactGroups:
    """Purchasing customers grouped by their first and last purchase day (day numbers) and
    purchase days: how many ``customers`` each group has and their mean ``repeat_spend``."""

    first_day: IntArray
    last_day: IntArray
    purchase_days: IntArray
    customers: IntArray
    repeat_spend: FloatArray

    def __len__(self) -> int:
        return len(self.customers)


@dataclass(frozen=True, slots=True)
class Predicted:
    """The predictive KPIs of a window (None: no model, or nothing to predict for)."""

    clv: Decimal | None = None
    expected_purchases_90d: float | None = None


def mean_clv(
    model: ModelVersion, currency: str, groups: FactGroups, today: int, horizon: Horizon
) -> float | None:
    """The mean predicted CLV of the grouped customers (all of them purchasing in
    ``currency``) on day number ``today``; None without a spend model for the currency,
    without customers, or when the spend model has no finite population mean."""
    gg = model.gamma_gamma.get(currency)
    n = int(groups.customers.sum()) if len(groups) else 0
    if gg is None or n == 0:
        return None
    s = summary_of_facts(
        groups.first_day, groups.last_day, groups.purchase_days, groups.repeat_spend, today
    )
    each = horizon_clv(model.bgnbd, gg, s.x, s.t_x, s.T, s.m, horizon)
    total = float(np.dot(each, groups.customers))
    return total / n if math.isfinite(total) else None


def base_expected_purchases(model: ModelVersion, groups: FactGroups, today: int) -> float:
    """The grouped customers' expected purchases in the next 90 days, summed."""
    if not len(groups):
        return 0.0
    s = summary_of_facts(
        groups.first_day, groups.last_day, groups.purchase_days, groups.repeat_spend, today
    )
    each = expected_purchases(model.bgnbd, NINETY_DAYS, s.x, s.t_x, s.T)
    return float(np.dot(each, groups.customers))
