"""Predicted customer lifetime value: BG/NBD purchases × Gamma-Gamma spend, month by month.

For a horizon H cut into months (365.25 / 12 days each; the last one may be shorter) with
boundaries t_1 < t_2 < … < t_n = H, a customer's predicted CLV is

    CLV = Σ_i (E[Y(t_i)] - E[Y(t_(i-1))]) · E[M] / (1 + d)^i,   t_0 = 0,

where E[Y(t)] is the BG/NBD expected number of purchases in the next t (given the customer's
x, t_x and T), E[M] the Gamma-Gamma expected value of a transaction (given x and m) and d the
monthly discount rate (each month's value is discounted at its end). With d = 0 it is
E[Y(H)] · E[M]. The value is revenue in the currency of the amounts (not a margin).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from clm_predict.bgnbd import BgNbdParams, p_alive
from clm_predict.bgnbd_expectation import alive_expectation
from clm_predict.gamma_gamma import GammaGammaParams, expected_spend
from clm_predict.grouping import distinct_rows
from clm_predict.rfm import RfmSummary

FloatArray = npt.NDArray[np.float64]

MONTH_DAYS = 365.25 / 12


def month_boundaries(horizon: float, month: float) -> FloatArray:
    """t_1 … t_n: the ends of the horizon's months (in the same unit as both arguments)."""
    if horizon <= 0:
        return np.zeros(0)
    steps = max(math.ceil(horizon / month - 1e-9), 1)
    return np.minimum(np.arange(1, steps + 1, dtype=np.float64) * month, horizon)


def clv(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    age: npt.ArrayLike,
    m: npt.ArrayLike,
    *,
    horizon: float,
    month: float,
    monthly_discount: float = 0.0,
) -> FloatArray:
    """Each customer's predicted CLV; ``horizon`` and ``month`` in the unit of t_x and T."""
    if monthly_discount < 0:
        raise ValueError("the monthly discount rate must be >= 0")
    xs, ts, ages = (
        v.ravel()
        for v in np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, t_x, age)))
    )
    shape = np.broadcast(np.asarray(x), np.asarray(t_x), np.asarray(age)).shape
    # E[Y(t)] = P(alive) × E[Y(t) | alive], and the latter depends on x and T only
    (x_d, age_d), inverse, _ = distinct_rows(xs, ages)
    # every month end of every distinct (x, T) in one call: months × customers
    ends = month_boundaries(horizon, month)[:, None]
    by_then = alive_expectation(bg.r, bg.alpha, bg.a, bg.b, ends, x_d[None, :], age_d[None, :])
    each_month = np.maximum(np.diff(by_then, axis=0, prepend=0.0), 0.0)
    discount = (1 + monthly_discount) ** np.arange(1, len(ends) + 1, dtype=np.float64)
    discounted = (each_month / discount[:, None]).sum(axis=0)
    value = p_alive(bg, xs, ts, ages) * discounted[inverse] * expected_spend(gg, xs, m)
    return np.asarray(value.reshape(shape))


def predicted_clv(
    bg: BgNbdParams,
    gg: GammaGammaParams,
    summary: RfmSummary,
    horizon_weeks: float,
    monthly_discount: float = 0.0,
) -> FloatArray:
    """Each customer's predicted CLV over ``horizon_weeks`` weeks, in the amounts' currency."""
    unit = summary.unit_days
    return clv(
        bg,
        gg,
        summary.frequency,
        summary.recency,
        summary.age,
        summary.monetary,
        horizon=horizon_weeks * 7 / unit,
        month=MONTH_DAYS / unit,
        monthly_discount=monthly_discount,
    )
