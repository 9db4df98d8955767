"""Properties of the predictive models' formulas, for any valid parameters and histories:
P(alive) is a probability (1 without a repeat purchase, falling with age), expected
purchases are finite, >= 0 and grow with the horizon, CLV is finite and discounting lowers it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from clm_predict import bgnbd, gamma_gamma
from clm_predict.bgnbd_expectation import GROUP_FROM, alive_expectation, by_quadrature
from clm_predict.clv import clv

positive = st.floats(-9.0, 9.0).map(math.exp)  # e^-9 .. e^9: tiny to huge
moderate = st.floats(-3.0, 3.0).map(math.exp)
frequency = st.integers(0, 10_000).map(float)
age = st.floats(0.0, 5_000.0)


@st.composite
def bg_params(draw: st.DrawFn, values: st.SearchStrategy[float] = positive) -> bgnbd.BgNbdParams:
    return bgnbd.BgNbdParams(draw(values), draw(values), draw(values), draw(values))


@st.composite
def history(draw: st.DrawFn) -> tuple[float, float, float]:
    x = draw(frequency)
    big_t = draw(age)
    t_x = 0.0 if x == 0 else draw(st.floats(0.0, big_t))
    return x, t_x, big_t


@settings(max_examples=300, deadline=None)
@given(bg_params(), history())
def test_p_alive_is_a_probability(params: bgnbd.BgNbdParams, h: tuple[float, float, float]) -> None:
    value = float(bgnbd.p_alive(params, *h))
    assert 0.0 <= value <= 1.0
    if h[0] == 0:
        assert value == 1.0


@settings(max_examples=300, deadline=None)
@given(bg_params(), history(), st.floats(0.0, 1_000.0))
def test_p_alive_does_not_rise_with_age(
    params: bgnbd.BgNbdParams, h: tuple[float, float, float], later: float
) -> None:
    x, t_x, big_t = h
    now, then = bgnbd.p_alive(params, x, t_x, [big_t, big_t + later])
    assert then <= now * (1 + 1e-12) + 1e-300


#: How far the conditional expectation is from exact, in purchases: the hypergeometric
#: function's rounding times (a + b + x - 1) / (a - 1), which is large next to a = 1 (there the
#: expectation is the mean of either side); at most ~8e-7 over 3,000 random parameter sets with
#: a horizon of zero, where the exact value is 0.
EXPECTATION_FLOOR = 1e-6


@settings(max_examples=300, deadline=None)
@given(bg_params(), history(), st.floats(0.0, 5_000.0), st.floats(0.0, 5_000.0))
@example(  # a = 1 and horizons next to zero: two values ~1e-9 apart, both rounding
    bgnbd.BgNbdParams(r=403.4287934927351, alpha=403.4287934927351, a=1.0, b=1.0),
    (0.0, 0.0, 0.0),
    9.115533449146174e-10,
    3.7853024904434617e-185,
)
def test_expected_purchases_are_finite_and_grow_with_the_horizon(
    params: bgnbd.BgNbdParams, h: tuple[float, float, float], t1: float, t2: float
) -> None:
    short, long = sorted((t1, t2))
    values = bgnbd.expected_purchases(params, np.array([short, long]), *h)
    assert np.all(np.isfinite(values))
    assert np.all(values >= 0)
    assert values[1] >= values[0] * (1 - 1e-9) - EXPECTATION_FLOOR


@settings(max_examples=100, deadline=None)
@given(bg_params(moderate), history(), st.floats(0.05, 200.0))
def test_the_closed_form_agrees_with_numerical_integration(
    params: bgnbd.BgNbdParams, h: tuple[float, float, float], t: float
) -> None:
    x, _, big_t = h
    assume(x <= 200)  # where the reference quadrature itself is accurate
    closed = float(alive_expectation(params.r, params.alpha, params.a, params.b, t, x, big_t))
    reference = by_quadrature(params.r, params.alpha, params.a, params.b, t, x, big_t)
    assert closed == pytest.approx(reference, rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("a", [1.0, 1.0 + 1e-5, 1.0 - 1e-5])
@pytest.mark.parametrize("b", [2.0, 1e-7])
def test_the_removable_singularities_are_smooth(a: float, b: float) -> None:
    """a = 1 (the prefactor's 0/0) and a + b + x - 1 = 0 (x = 0, b -> 0): the value is the
    limit, continuous with its neighbours."""
    params = bgnbd.BgNbdParams(0.5, 3.0, a, b)
    value = float(bgnbd.expected_purchases(params, 39.0, 0.0, 0.0, 20.0))
    near = float(bgnbd.expected_purchases(bgnbd.BgNbdParams(0.5, 3.0, a + 0.01, b), 39.0, 0, 0, 20))
    assert math.isfinite(value)
    assert value > 0
    assert value == pytest.approx(near, rel=0.02)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.1, 50.0),
    st.floats(1.01, 50.0),
    st.floats(0.01, 1_000.0),
    st.integers(0, 10_000),
    st.floats(0.01, 10_000.0),
)
def test_expected_spend_is_between_the_population_and_the_customer(
    p: float, q: float, v: float, x: int, m: float
) -> None:
    params = gamma_gamma.GammaGammaParams(p, q, v)
    value = float(gamma_gamma.expected_spend(params, x, m if x else 0.0))
    assert math.isfinite(value)
    assert value > 0
    if x == 0:
        assert value == pytest.approx(params.population_mean)
    else:
        low, high = sorted((params.population_mean, m))
        assert low * (1 - 1e-9) <= value <= high * (1 + 1e-9)
        assert math.isfinite(float(gamma_gamma.log_likelihood(params, x, m)))


@settings(max_examples=100, deadline=None)
@given(bg_params(moderate), history(), st.floats(0.01, 0.2))
def test_clv_is_finite_and_discounting_lowers_it(
    params: bgnbd.BgNbdParams, h: tuple[float, float, float], rate: float
) -> None:
    spend = gamma_gamma.GammaGammaParams(6.25, 3.74, 15.44)
    x, t_x, big_t = h
    m = 20.0 if x else 0.0
    plain = float(clv(params, spend, x, t_x, big_t, m, horizon=52.0, month=4.35))
    discounted = float(
        clv(params, spend, x, t_x, big_t, m, horizon=52.0, month=4.35, monthly_discount=rate)
    )
    whole = float(bgnbd.expected_purchases(params, 52.0, x, t_x, big_t)) * float(
        gamma_gamma.expected_spend(spend, x, m)
    )
    assert math.isfinite(plain)
    assert 0 <= discounted <= plain * (1 + 1e-12)
    assert plain == pytest.approx(whole, rel=1e-9, abs=1e-9)


def test_scalars_in_scalars_out() -> None:
    params = bgnbd.BgNbdParams(0.243, 4.414, 0.793, 2.426)
    assert float(bgnbd.p_alive(params, 2, 30.43, 38.86)) == pytest.approx(0.7266, abs=1e-4)
    assert np.shape(bgnbd.expected_purchases(params, 39, 2, 30.43, 38.86)) == ()
    assert float(bgnbd.expected_purchases_new(params, 39)) > 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        bgnbd.BgNbdParams(1.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="q"):
        gamma_gamma.GammaGammaParams(1.0, math.nan, 1.0)
    with pytest.raises(ValueError, match="recency"):
        bgnbd.log_likelihood(bgnbd.BgNbdParams(1, 1, 1, 1), 1, 5.0, 4.0)


def test_many_distinct_customers_are_scored_at_one_horizon() -> None:
    """More distinct (x, T) than the grouping threshold: scored once each, not recursed
    into forever, and equal to scoring them in small slices."""
    n = GROUP_FROM + 500
    x = np.arange(n, dtype=np.float64) % 40
    age = 40 + np.arange(n, dtype=np.float64) / 7
    t_x = age / 2
    params = bgnbd.BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    together = bgnbd.expected_purchases(params, 90 / 7, x, t_x, age)
    sliced = np.concatenate(
        [
            bgnbd.expected_purchases(
                params, 90 / 7, x[i : i + 1000], t_x[i : i + 1000], age[i : i + 1000]
            )
            for i in range(0, n, 1000)
        ]
    )
    np.testing.assert_allclose(together, sliced, rtol=1e-12)
