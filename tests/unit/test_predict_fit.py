"""Fitting: the parameters are recovered from data simulated with known ones; the analytic
gradient is the likelihood's; data a model cannot be fitted on is refused in a sentence."""

from __future__ import annotations

import numpy as np
import pytest

from clm_predict import bgnbd, gamma_gamma
from clm_predict.bgnbd import _Data, _log_likelihood  # the gradient is checked below
from clm_predict.mle import FitError
from clm_predict.rfm import RfmSummary
from clm_predict.simulate import simulate, summary

TRUE_BG = bgnbd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
TRUE_GG = gamma_gamma.GammaGammaParams(p=6.25, q=3.74, v=15.44)
OTHER_BG = bgnbd.BgNbdParams(r=1.5, alpha=12.0, a=2.0, b=6.0)
OTHER_GG = gamma_gamma.GammaGammaParams(p=2.0, q=5.0, v=80.0)


@pytest.mark.parametrize(
    ("bg", "gg", "seed"), [(TRUE_BG, TRUE_GG, 7), (OTHER_BG, OTHER_GG, 8)], ids=["cdnow", "other"]
)
def test_parameters_are_recovered_from_simulated_data(
    bg: bgnbd.BgNbdParams, gg: gamma_gamma.GammaGammaParams, seed: int
) -> None:
    ages = np.random.default_rng(seed).uniform(26.0, 78.0, 40_000)  # weeks
    data = summary(simulate(bg, gg, ages, seed=seed))
    fitted = bgnbd.fit(data).params
    for name in ("r", "alpha", "a", "b"):
        assert getattr(fitted, name) == pytest.approx(getattr(bg, name), rel=0.15), name
    spend = gamma_gamma.fit(data).params
    for name in ("p", "q", "v"):
        assert getattr(spend, name) == pytest.approx(getattr(gg, name), rel=0.15), name


def test_the_gradient_is_the_likelihoods() -> None:
    data = summary(simulate(TRUE_BG, TRUE_GG, np.full(500, 39.0), seed=3))
    d = _Data.of(data.frequency, data.recency, data.age)
    point = np.array([0.4, 3.0, 1.3, 2.0])
    _, grad = _log_likelihood(bgnbd.BgNbdParams(*point), d, gradient=True)
    assert grad is not None
    for k in range(4):
        step = np.zeros(4)
        step[k] = 1e-6 * point[k]
        up, _ = _log_likelihood(bgnbd.BgNbdParams(*(point + step)), d)
        down, _ = _log_likelihood(bgnbd.BgNbdParams(*(point - step)), d)
        numeric = (up.sum() - down.sum()) / (2 * step[k])
        assert grad[k].sum() == pytest.approx(numeric, rel=1e-5)


def test_the_fit_uses_every_customer_once() -> None:
    data = summary(simulate(TRUE_BG, TRUE_GG, np.full(3_000, 39.0), seed=4))
    fit = bgnbd.fit(data)
    assert fit.customers == len(data)
    total = bgnbd.log_likelihood(fit.params, data.frequency, data.recency, data.age).sum()
    assert fit.log_likelihood == pytest.approx(float(total))


def _summary(x: list[float], t_x: list[float], age: list[float], m: list[float]) -> RfmSummary:
    ids = tuple(f"c{i}" for i in range(len(x)))
    x_, t_, age_, m_ = (np.array(v, dtype=np.float64) for v in (x, t_x, age, m))
    return RfmSummary(ids, x_, t_, age_, m_)


def test_no_repeat_purchase_is_refused() -> None:
    with pytest.raises(FitError, match="repeat purchases"):
        bgnbd.fit(_summary([0, 0], [0, 0], [10, 20], [0, 0]))
    with pytest.raises(FitError, match="at least one customer"):
        bgnbd.fit(_summary([], [], [], []))
    with pytest.raises(FitError, match="at least 2 repeat customers"):
        gamma_gamma.fit(_summary([1, 0], [3, 0], [10, 20], [5.0, 0]))


def test_degenerate_data_is_refused() -> None:
    with pytest.raises(FitError, match="mean spends differ"):
        gamma_gamma.fit(_summary([1, 1, 1], [5, 5, 5], [10, 10, 10], [7.0, 7.0, 7.0]))
    # one repeat purchase right after the first: the likelihood grows as alpha -> 0
    with pytest.raises(FitError, match="ran to 0 or ∞"):
        bgnbd.fit(_summary([1, 0, 0], [1e-9, 0, 0], [10, 10, 10], [1.0, 0, 0]))
