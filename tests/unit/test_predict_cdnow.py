"""The published CDNOW check of the predictive models (2,357 customers, a 39-week calibration
ending 1997-09-30, time in weeks).

Published figures: BG/NBD r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, log-likelihood -9582.4
(Fader, Hardie & Lee 2005); Gamma-Gamma p = 6.25, q = 3.74, v = 15.44 (Fader & Hardie 2013);
a customer with x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in the next 39 weeks.

Both models are fitted from the raw sample's transactions through our summary builder (what
``clm model fit`` does) and from lifetimes' summary. The summaries agree on x, t_x and T
exactly, so the BG/NBD fits are the same. The Gamma-Gamma fits differ in the fourth digit:
lifetimes' file rounds each mean spend to cents; both are within 1 % of the published
p, q, v, and the raw sample's (unrounded) means match them more closely
(6.2496, 3.7442, 15.4435 against 6.2488, 3.7446, 15.4477).
"""

from __future__ import annotations

import numpy as np
import pytest

from clm_predict import bgnbd, gamma_gamma
from clm_predict.rfm import RfmSummary, summary_from_transactions
from tests import cdnow

BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}


@pytest.fixture(scope="module")
def ours() -> RfmSummary:
    return summary_from_transactions(
        cdnow.sample_transactions(), calibration_end=cdnow.CALIBRATION_END
    )


@pytest.fixture(scope="module")
def theirs() -> RfmSummary:
    rows = cdnow.lifetimes_summary()
    ids = tuple(rows)

    def column(name: str) -> np.ndarray:
        return np.array([rows[i][name] for i in ids], dtype=np.float64)

    return RfmSummary(ids, column("x"), column("t_x"), column("T"), column("zbar"))


def test_the_summary_reproduces_lifetimes_own(ours: RfmSummary) -> None:
    rows = cdnow.lifetimes_summary()
    assert len(ours) == len(rows) == 2357
    index = {c: i for i, c in enumerate(ours.customer_ids)}
    for customer, row in rows.items():
        i = index[customer]
        assert ours.frequency[i] == row["x"]
        assert ours.recency[i] == pytest.approx(row["t_x"], abs=0.005 + 1e-9)
        assert ours.age[i] == pytest.approx(row["T"], abs=0.005 + 1e-9)
        # the file rounds to cents, half-way cases upwards
        assert ours.monetary[i] == pytest.approx(row["zbar"], abs=0.01)
    assert ours.repeat_customers == 946


def test_the_first_customer_as_published(ours: RfmSummary) -> None:
    i = ours.customer_ids.index("1")
    assert ours.frequency[i] == 2
    assert round(float(ours.recency[i]), 2) == 30.43
    assert round(float(ours.age[i]), 2) == 38.86  # 272 days: 1997-01-01 .. 1997-09-30


@pytest.mark.parametrize("source", ["ours", "theirs"])
def test_bgnbd_fit_matches_the_paper(source: str, request: pytest.FixtureRequest) -> None:
    summary: RfmSummary = request.getfixturevalue(source)
    fit = bgnbd.fit(summary)
    for name, published in BGNBD.items():
        assert getattr(fit.params, name) == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert fit.customers == 2357


@pytest.mark.parametrize("source", ["ours", "theirs"])
def test_gamma_gamma_fit_matches_the_paper(source: str, request: pytest.FixtureRequest) -> None:
    summary: RfmSummary = request.getfixturevalue(source)
    fit = gamma_gamma.fit(summary)
    for name, published in GAMMA_GAMMA.items():
        assert getattr(fit.params, name) == pytest.approx(published, rel=0.01), name
    assert fit.customers == 946


def test_spend_hardly_depends_on_frequency(ours: RfmSummary) -> None:
    """The Gamma-Gamma assumption, checked as in the paper (a correlation of 0.11)."""
    repeat = ours.frequency > 0
    correlation = np.corrcoef(ours.frequency[repeat], ours.monetary[repeat])[0, 1]
    assert correlation == pytest.approx(0.11, abs=0.01)


def test_expected_purchases_of_the_published_customer(ours: RfmSummary) -> None:
    published = bgnbd.BgNbdParams(**BGNBD)
    assert float(bgnbd.expected_purchases(published, 39, 2, 30.43, 38.86)) == pytest.approx(
        1.226, abs=0.001
    )
    fitted = bgnbd.fit(ours).params
    assert float(bgnbd.expected_purchases(fitted, 39, 2, 30.43, 38.86)) == pytest.approx(
        1.226, abs=0.001
    )
    assert 0 < float(bgnbd.p_alive(fitted, 2, 30.43, 38.86)) < 1
