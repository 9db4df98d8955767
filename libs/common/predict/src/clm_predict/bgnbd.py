"""The BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the easy way").

While active, a customer buys at a Poisson rate λ; after each purchase they become inactive
for good with probability p. Across customers λ ~ Gamma(r, α) (α a rate, in the summary's time
unit) and p ~ Beta(a, b), independent. From a customer's frequency x, recency t_x and age T
(see :mod:`clm_predict.rfm`) the model gives the likelihood, the probability that the customer
is still active, and the expected number of purchases in the next t time units.

Every function takes numpy arrays (or scalars) and broadcasts; the likelihood is computed in
log space (``gammaln``, ``logaddexp``), so large x and T do not overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betaln, digamma, expit, gammaln

from clm_predict.bgnbd_expectation import alive_expectation
from clm_predict.grouping import distinct_rows
from clm_predict.mle import FitError, maximise
from clm_predict.rfm import RfmSummary

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"BG/NBD parameter {name} must be a finite number > 0")


@dataclass(frozen=True, slots=True)
class BgNbdFit:
    params: BgNbdParams
    log_likelihood: float
    customers: int


@dataclass(frozen=True, slots=True)
class _Data:
    """The summary as the likelihood needs it: the distinct frequencies once each (and, for
    a fit, the distinct (x, t_x, T) rows once each, with their counts as weights)."""

    x: FloatArray
    t_x: FloatArray
    age: FloatArray
    distinct: FloatArray
    index: npt.NDArray[np.intp]
    weight: FloatArray | None = None

    @classmethod
    def of(cls, x: ArrayLike, t_x: ArrayLike, age: ArrayLike, grouped: bool = False) -> _Data:
        xs, ts, ages = (
            v.ravel()
            for v in np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, t_x, age)))
        )
        if np.any(xs < 0) or np.any(ts < 0) or np.any(ts > ages):
            raise ValueError("the summary needs 0 <= frequency and 0 <= recency <= age")
        weight = None
        if grouped:
            (xs, ts, ages), _, weight = distinct_rows(xs, ts, ages)
        distinct, index = np.unique(xs, return_inverse=True)
        return cls(xs, ts, ages, distinct, index.ravel(), weight)


def _log_likelihood(
    params: BgNbdParams, d: _Data, gradient: bool = False
) -> tuple[FloatArray, FloatArray | None]:
    """Each customer's log-likelihood and, if asked, its gradient in (r, α, a, b)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    u, repeat = d.distinct, d.x > 0
    u_repeat = u > 0
    lg_bx1 = np.where(u_repeat, gammaln(np.maximum(b + u - 1, 1e-300)), 0.0)
    lg_abx = gammaln(a + b + u)[d.index]
    common = gammaln(r + u)[d.index] - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    log_age, log_rec = np.log(alpha + d.age), np.log(alpha + d.t_x)
    b2 = gammaln(a) + gammaln(b + u)[d.index] - lg_abx - (r + d.x) * log_age
    b3 = np.where(repeat, gammaln(a + 1) + lg_bx1[d.index] - lg_abx - (r + d.x) * log_rec, -np.inf)
    mix = np.logaddexp(b2, b3)
    ll = common + mix
    if not gradient:
        return ll, None
    w2, w3 = np.exp(b2 - mix), np.exp(b3 - mix)
    ps_abx = digamma(a + b + u)[d.index]
    ps_bx1 = np.where(u_repeat, digamma(np.maximum(b + u - 1, 1e-300)), 0.0)[d.index]
    grad = np.stack(
        [
            digamma(r + u)[d.index] - digamma(r) + np.log(alpha) - w2 * log_age - w3 * log_rec,
            r / alpha - (r + d.x) * (w2 / (alpha + d.age) + w3 / (alpha + d.t_x)),
            digamma(a + b)
            - digamma(a)
            + w2 * (digamma(a) - ps_abx)
            + w3 * (digamma(a + 1) - ps_abx),
            digamma(a + b)
            - digamma(b)
            + w2 * (digamma(b + u)[d.index] - ps_abx)
            + w3 * (ps_bx1 - ps_abx),
        ]
    )
    return ll, grad


def log_likelihood(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, age: ArrayLike) -> FloatArray:
    """Each customer's log-likelihood (equation 6 of the paper, in log space)."""
    data = _Data.of(x, t_x, age)
    ll, _ = _log_likelihood(params, data)
    return ll.reshape(np.broadcast(np.asarray(x), np.asarray(t_x), np.asarray(age)).shape)


def fit(summary: RfmSummary) -> BgNbdFit:
    """The maximum-likelihood parameters for ``summary`` (FitError if it fails)."""
    if len(summary) == 0:
        raise FitError("the BG/NBD fit needs at least one customer")
    if summary.repeat_customers == 0:
        raise FitError("the BG/NBD fit needs customers with repeat purchases (none has one)")
    data = _Data.of(summary.frequency, summary.recency, summary.age, grouped=True)
    weight = data.weight
    assert weight is not None
    n = len(summary)

    def objective(log_params: npt.NDArray[np.float64]) -> tuple[float, FloatArray]:
        params = BgNbdParams(*(float(v) for v in np.exp(log_params)))
        ll, grad = _log_likelihood(params, data, gradient=True)
        assert grad is not None
        chain = (grad @ weight) * np.exp(log_params)  # d/d log θ = θ d/dθ
        return -float(ll @ weight) / n, -chain / n

    rate = float(summary.frequency.sum()) / max(float(summary.age.sum()), 1e-9)
    alpha0 = float(np.clip(1.0 / max(rate, 1e-9), 1e-3, 1e6))
    starts = [(1.0, alpha0, 1.0, 1.0), (0.5, alpha0 / 2, 0.5, 2.0), (1.0, 1.0, 1.0, 1.0)]
    best = BgNbdParams(*(float(v) for v in maximise(objective, starts, "BG/NBD")))
    total, _ = _log_likelihood(best, data)
    return BgNbdFit(best, float(total @ weight), n)


def p_alive(params: BgNbdParams, x: ArrayLike, t_x: ArrayLike, age: ArrayLike) -> FloatArray:
    """The probability that a customer with this history is still active (1 when x = 0)."""
    xs = np.asarray(x, dtype=np.float64)
    return np.where(xs > 0, expit(-_log_odds_inactive(params, xs, t_x, age)), 1.0)


def _log_odds_inactive(
    params: BgNbdParams, x: FloatArray, t_x: ArrayLike, age: ArrayLike
) -> FloatArray:
    """log of a/(b+x-1) ((α+T)/(α+t_x))^(r+x): P(inactive)/P(active) for x > 0."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xr = np.maximum(x, 1.0)  # x = 0 is handled by the caller
    ages, recs = np.asarray(age, dtype=np.float64), np.asarray(t_x, dtype=np.float64)
    return np.asarray(
        np.log(a) - np.log(b + xr - 1) + (r + xr) * (np.log(alpha + ages) - np.log(alpha + recs))
    )


def expected_purchases(
    params: BgNbdParams, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, age: ArrayLike
) -> FloatArray:
    """The expected number of purchases in the next ``t`` time units of a customer with this
    history (equation 10 of the paper): P(alive) × the expectation of an active customer."""
    xs = np.asarray(x, dtype=np.float64)
    alive = p_alive(params, xs, t_x, age)
    if_alive = alive_expectation(
        params.r, params.alpha, params.a, params.b, np.asarray(t, dtype=np.float64), xs, age
    )
    return np.asarray(np.maximum(alive * if_alive, 0.0))


def expected_purchases_new(params: BgNbdParams, t: ArrayLike) -> FloatArray:
    """E[X(t)]: the expected purchases in the first ``t`` time units of a new customer (after
    the first purchase), i.e. the conditional expectation with x = t_x = T = 0."""
    return expected_purchases(params, t, 0.0, 0.0, 0.0)
