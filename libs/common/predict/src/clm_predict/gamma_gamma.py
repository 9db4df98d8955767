"""The Gamma-Gamma model of spend per transaction (Fader & Hardie 2013, "The Gamma-Gamma
model of monetary value").

A customer's transaction values are Gamma(p, ν) around their own mean p/ν, and across
customers ν ~ Gamma(q, v) (v a rate, in the currency). The mean m of a customer's x repeat
transactions then has a closed-form marginal likelihood, and the expected value of their next
transaction is a weighted mean of the population mean p·v/(q-1) and their own m. The model
assumes a customer's spend does not depend on how often they buy (check the correlation of m
and x among repeat customers), and it needs one currency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import digamma, gammaln

from clm_predict.mle import FitError, maximise
from clm_predict.rfm import RfmSummary

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    v: float

    def __post_init__(self) -> None:
        for name in ("p", "q", "v"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"Gamma-Gamma parameter {name} must be a finite number > 0")

    @property
    def population_mean(self) -> float:
        """The mean transaction value over all customers: p·v/(q-1), infinite if q <= 1."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else float("inf")


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    params: GammaGammaParams
    log_likelihood: float
    customers: int


def _repeat(x: ArrayLike, m: ArrayLike) -> tuple[FloatArray, FloatArray]:
    xs, ms = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64))
    if np.any(xs < 1) or np.any(ms <= 0):
        raise ValueError("the Gamma-Gamma likelihood needs x >= 1 and a mean spend m > 0")
    return xs, ms


def log_likelihood(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> FloatArray:
    """Each repeat customer's log-likelihood of their mean spend m over x transactions."""
    xs, ms = _repeat(x, m)
    p, q, v = params.p, params.q, params.v
    px = p * xs
    return np.asarray(
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(ms)
        + px * np.log(xs)
        - (px + q) * np.log(v + ms * xs)
    )


def fit(summary: RfmSummary) -> GammaGammaFit:
    """The maximum-likelihood parameters over the summary's repeat customers (x >= 1, m > 0)."""
    keep = (summary.frequency > 0) & (summary.monetary > 0)
    xs, ms = summary.frequency[keep], summary.monetary[keep]
    n = len(xs)
    if n < 2:
        raise FitError("the Gamma-Gamma fit needs at least 2 repeat customers with a spend > 0")
    if float(np.ptp(ms)) == 0:
        raise FitError("the Gamma-Gamma fit needs repeat customers whose mean spends differ")
    distinct, index = np.unique(xs, return_inverse=True)
    log_m, log_x = np.log(ms), np.log(xs)

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(log_params)
        px = p * xs
        log_vmx = np.log(v + ms * xs)
        ll = (
            (gammaln(p * distinct + q) - gammaln(p * distinct))[index]
            - gammaln(q)
            + q * np.log(v)
            + (px - 1) * log_m
            + px * log_x
            - (px + q) * log_vmx
        )
        gap = (digamma(p * distinct + q) - digamma(p * distinct))[index]
        grad = np.array(
            [
                float(np.sum(xs * (gap + log_m + log_x - log_vmx))),
                float(np.sum(digamma(p * distinct + q)[index] - log_vmx))
                + n * (np.log(v) - digamma(q)),
                float(n * q / v - np.sum((px + q) / (v + ms * xs))),
            ]
        )
        return -float(ll.sum()) / n, -grad * np.exp(log_params) / n

    mean, var = float(ms.mean()), float(ms.var())
    starts = [(1.0, 2.0, mean), (2.0, 3.0, max(mean, 1e-6)), (1.0, 1.0, 1.0)]
    if var > 0:
        starts.insert(0, (max(mean**2 / var, 0.1), 3.0, 2.0 * var / max(mean, 1e-9)))
    best = GammaGammaParams(*(float(v) for v in maximise(objective, starts, "Gamma-Gamma")))
    return GammaGammaFit(best, float(log_likelihood(best, xs, ms).sum()), n)


def expected_spend(params: GammaGammaParams, x: ArrayLike, m: ArrayLike) -> FloatArray:
    """The expected value of a customer's next transaction given x repeat transactions of
    mean m: (p·(v + x·m)) / (p·x + q - 1), the population mean p·v/(q-1) when x = 0 (infinite
    when q <= 1, where the population mean does not exist)."""
    xs, ms = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64))
    p, q, v = params.p, params.q, params.v
    repeat = xs > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = p * (v + xs * ms) / (p * xs + q - 1)
    return np.asarray(np.where(repeat, conditional, params.population_mean))
