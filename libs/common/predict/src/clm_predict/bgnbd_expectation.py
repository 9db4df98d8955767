"""The BG/NBD expected purchases of a customer known to be active, with its numerical guards.

For a customer who is active at age T after x repeat purchases, the posterior is
λ ~ Gamma(r + x, α + T) and p ~ Beta(a, b + x), and the expected purchases in the next t units
are E_p[(1 - ((α+T)/(α+T+pt))^(r+x)) / p]. Equation 10 of the paper writes this as

    (a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1; z)],  z = t/(α+T+t).

Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z) turns the bracket
into 1 - (1-z)^(a-1) · 2F1(a+b-1-r, a-1; a+b+x-1; z), whose terms stay bounded for large x
and T (the original form multiplies a huge 2F1 by a tiny power); where a is large and the
transformed series overflows instead, the original form is used. Two places remain
ill-conditioned, both removable singularities of a smooth function: a = 1 (0/0 in the
prefactor) and a+b+x-1 = 0 (a pole of 2F1 cancelled by the prefactor, only for x = 0). Near
them the value is the mean of the two values a step either side (exact to second order). Any
entry still not finite is integrated numerically.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
from scipy.integrate import IntegrationWarning, quad
from scipy.special import betaln, hyp2f1

from clm_predict.grouping import distinct_rows

FloatArray = npt.NDArray[np.float64]

STEP = 1e-3  # the step either side of a removable singularity
GROUP_FROM = 10_000  # entries from which distinct (x, T) are computed once each


def _closed_form(
    r: float,
    alpha: float,
    a: float,
    b: FloatArray | float,
    t: FloatArray,
    x: FloatArray,
    age: FloatArray,
) -> FloatArray:
    c = a + b + x - 1
    z = t / (alpha + age + t)
    with np.errstate(all="ignore"):
        log_rest = np.log1p(-z)
        term = np.exp((a - 1) * log_rest) * hyp2f1(a + b - 1 - r, a - 1, c, z)
        # for large a the transformed series overflows where the paper's own form does not
        first_form = ~np.isfinite(term)
        if np.any(first_form):
            term = np.where(
                first_form, np.exp((r + x) * log_rest) * hyp2f1(r + x, b + x, c, z), term
            )
        return np.asarray(c / (a - 1) * (1 - term), dtype=np.float64)


def _guarded_in_b(
    r: float, alpha: float, a: float, b: float, t: FloatArray, x: FloatArray, age: FloatArray
) -> FloatArray:
    value = _closed_form(r, alpha, a, b, t, x, age)
    near_pole = np.abs(a + b + x - 1) < STEP / 2
    if np.any(near_pole):
        pick = (t[near_pole], x[near_pole], age[near_pole])
        either = _closed_form(r, alpha, a, b + STEP, *pick) + _closed_form(
            r, alpha, a, b - STEP, *pick
        )
        value[near_pole] = either / 2
    return value


def alive_expectation(
    r: float,
    alpha: float,
    a: float,
    b: float,
    t: npt.ArrayLike,
    x: npt.ArrayLike,
    age: npt.ArrayLike,
) -> FloatArray:
    """E[purchases in (T, T+t] | active at T, x] for each entry (arrays broadcast)."""
    ts, xs, ages = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (t, x, age)))
    shape = ts.shape
    ts, xs, ages = ts.ravel(), xs.ravel(), ages.ravel()
    if np.ndim(t) == 0 and len(xs) > GROUP_FROM:
        # one horizon for many customers: once per distinct (x, T), when some repeat
        (x_d, age_d), inverse, _ = distinct_rows(xs, ages)
        if len(x_d) < len(xs):
            value = alive_expectation(r, alpha, a, b, float(np.asarray(t)), x_d, age_d)
            return value[inverse].reshape(shape)
    if abs(a - 1) < STEP / 2:
        value = (
            _guarded_in_b(r, alpha, a + STEP, b, ts, xs, ages)
            + _guarded_in_b(r, alpha, a - STEP, b, ts, xs, ages)
        ) / 2
    else:
        value = _guarded_in_b(r, alpha, a, b, ts, xs, ages)
    value = np.where(ts > 0, value, 0.0)
    bad = ~np.isfinite(value) | (value < 0)
    for i in np.flatnonzero(bad):
        value[i] = by_quadrature(r, alpha, a, b, float(ts[i]), float(xs[i]), float(ages[i]))
    return value.reshape(shape)


def by_quadrature(
    r: float, alpha: float, a: float, b: float, t: float, x: float, age: float
) -> float:
    """The same expectation by numerical integration over p ~ Beta(a, b + x) (slow: the
    fallback and the tests' reference). For a < 1 the substitution p = u^(1/a) turns the
    density's p^(a-1) into a constant; otherwise the integral is split at the mean of p."""
    if t <= 0:
        return 0.0
    shape, scale, beta = r + x, t / (alpha + age), b + x
    log_norm = -betaln(a, beta)

    def bracket(p: float) -> float:  # (1 - E[e^(-λpt)]) / p, its limit at p = 0
        if p <= 0:
            return shape * scale
        return -math.expm1(-shape * math.log1p(p * scale)) / p

    def weight(p: float, power: float) -> float:  # the density without p^(a-1-power)
        if p >= 1 or (p <= 0 and power > 0):
            return 0.0  # the end points carry no mass
        log_p = power * math.log(p) if power else 0.0
        return math.exp(min(log_norm + log_p + (beta - 1) * math.log1p(-p), 700.0))

    with warnings.catch_warnings():
        # the last resort's accuracy is the best quad can do; its warnings would reach users
        warnings.simplefilter("ignore", IntegrationWarning)
        if a < 1:
            value, _ = quad(
                lambda u: weight(u ** (1 / a), 0.0) / a * bracket(u ** (1 / a)), 0.0, 1.0, limit=200
            )
        else:
            mean = a / (a + beta)
            value, _ = quad(
                lambda p: weight(p, a - 1) * bracket(p) if p > 0 else 0.0,
                0.0,
                1.0,
                points=[mean / 4, mean, min(4 * mean, 0.99)],
                limit=400,
            )
    return float(value)
