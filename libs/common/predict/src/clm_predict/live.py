"""Scores of live customers from their running purchase-day facts (pure: no I/O, no clock).

A service that keeps, per customer, the UTC days of its first and last purchase, its number of
distinct purchase days and the summed value of its repeat days (the first day left out) has the
models' repeat-purchase summary on any day, under the papers' "one transaction a day" rule:

- ``x``: repeat purchase days, ``purchase_days - 1``;
- ``t_x``: weeks from the first purchase day to the last;
- ``T``: weeks from the first purchase day to the day scored (never less than ``t_x``: a
  purchase dated ahead of the day scored counts as on it);
- ``m``: the mean value of a repeat day, 0 without one.

The stage engine scores one customer at a time with it, the metrics service whole sets of them
(arrays); both through :func:`summary_of_facts`, so their numbers agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from clm_predict.bgnbd import BgNbdParams
from clm_predict.clv import MONTH_DAYS, clv
from clm_predict.gamma_gamma import GammaGammaParams

FloatArray = npt.NDArray[np.float64]

DAYS_PER_WEEK = 7.0
#: The horizon of ``expected_purchases_90d``, in weeks.
NINETY_DAYS = 90 / DAYS_PER_WEEK


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One fitted row of ``model_fits``: what the scores are computed with."""

    version: int
    fitted_at: datetime
    bgnbd: BgNbdParams
    gamma_gamma: dict[str, GammaGammaParams] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Horizon:
    """What predicted CLV sums over (the ``CLM_MODEL_…`` settings)."""

    months: int = 12
    monthly_discount: float = 0.0


@dataclass(frozen=True, slots=True)
class FactsSummary:
    """The summary of one customer or of many (arrays in the facts' order), in weeks."""

    x: FloatArray
    t_x: FloatArray
    T: FloatArray
    m: FloatArray


def summary_of_facts(
    first_day: npt.ArrayLike,
    last_day: npt.ArrayLike,
    purchase_days: npt.ArrayLike,
    repeat_spend: npt.ArrayLike,
    today: int,
) -> FactsSummary:
    """The summary on day ``today`` of customers whose first and last purchase fell on the
    UTC days ``first_day`` and ``last_day`` (day numbers: :func:`clm_predict.rfm.day_number`),
    with ``purchase_days`` distinct purchase days and ``repeat_spend`` over the repeat ones."""
    first = np.asarray(first_day, dtype=np.int64)
    span = np.asarray(last_day, dtype=np.int64) - first
    x = np.maximum(np.asarray(purchase_days, dtype=np.int64) - 1, 0).astype(np.float64)
    spend = np.asarray(repeat_spend, dtype=np.float64)
    m = np.divide(spend, x, out=np.zeros(np.broadcast(spend, x).shape), where=x > 0)
    return FactsSummary(
        x=x,
        t_x=span / DAYS_PER_WEEK,
        T=np.maximum(today - first, span) / DAYS_PER_WEEK,
        m=m,
    )


def horizon_clv(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    age: npt.ArrayLike,
    m: npt.ArrayLike,
    horizon: Horizon,
) -> FloatArray:
    """Predicted CLV (summary in weeks) over the horizon's months, discounted monthly;
    infinite when the spend model's population mean is (q <= 1)."""
    return clv(
        bg,
        gg,
        x,
        t_x,
        age,
        m,
        horizon=horizon.months * MONTH_DAYS / DAYS_PER_WEEK,
        month=MONTH_DAYS / DAYS_PER_WEEK,
        monthly_discount=horizon.monthly_discount,
    )


def version_from_row(row: dict[str, Any]) -> ModelVersion:
    """A fitted ``model_fits`` row (or a ``model_current`` row, whose id is ``version``) as
    the version the scores use."""
    bg = row["bgnbd"]
    return ModelVersion(
        version=int(row["version"] if "version" in row else row["id"]),
        fitted_at=row["fitted_at"] if "fitted_at" in row else row["attempted_at"],
        bgnbd=BgNbdParams(r=bg["r"], alpha=bg["alpha"], a=bg["a"], b=bg["b"]),
        gamma_gamma={
            currency: GammaGammaParams(p=gg["p"], q=gg["q"], v=gg["v"])
            for currency, gg in (row["gamma_gamma"] or {}).items()
        },
    )
