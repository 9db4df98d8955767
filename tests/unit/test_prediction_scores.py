"""The stage engine's side of the predictions: each customer's summary from its running facts
equals the model library's summary of its raw purchases, the scores are the library's, and a
refit refuses too little data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_domain.events import parse_event
from clm_domain.lifecycle import CustomerState, rebuild
from clm_domain.rules import load_rules
from clm_predict import bgnbd
from clm_predict.bgnbd import BgNbdParams
from clm_predict.gamma_gamma import GammaGammaParams
from clm_predict.rfm import summary_from_transactions
from clm_stage_engine.predictions import Horizon, ModelVersion, rfm_of, scores
from clm_stage_engine.repository.models import PurchaseGroup
from clm_stage_engine.usecases.refit import fit_models
from tests.factories import NOW, event_doc

RULES = load_rules()
START = datetime(2025, 1, 1, tzinfo=UTC)
TODAY = date(2025, 12, 31)
MODEL = ModelVersion(
    version=3,
    fitted_at=START,
    bgnbd=BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426),
    gamma_gamma={"EUR": GammaGammaParams(p=6.25, q=3.74, v=15.44)},
)

purchases = st.lists(
    st.tuples(
        st.integers(0, 300 * 24 * 60),  # minutes after START
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5000), places=2),
    ),
    min_size=1,
    max_size=12,
)


def customer_of(bought: list[tuple[int, Decimal]]) -> CustomerState:
    events = [
        parse_event(
            event_doc(
                "purchase",
                event_id=f"e{n}",
                customer_id="c-1",
                occurred_at=(START + timedelta(minutes=m)).isoformat(),
                amount=str(amount),
                currency="EUR",
                order_id=f"o{n}",
            ),
            now=NOW,
        )
        for n, (m, amount) in enumerate(bought)
    ]
    customer = rebuild("c-1", events, RULES)
    assert customer is not None
    return customer


@settings(max_examples=150, deadline=None)
@given(purchases)
def test_the_summary_from_the_facts_is_the_librarys_from_the_purchases(
    bought: list[tuple[int, Decimal]],
) -> None:
    customer = customer_of(bought)
    rfm = rfm_of(customer, TODAY)
    assert rfm is not None
    library = summary_from_transactions(
        [("c-1", START + timedelta(minutes=m), amount) for m, amount in bought],
        calibration_end=TODAY,
    )
    assert rfm.x == library.frequency[0]
    assert rfm.t_x == pytest.approx(library.recency[0])
    assert pytest.approx(library.age[0]) == rfm.T
    assert rfm.m == pytest.approx(library.monetary[0])
    doc = scores(MODEL, customer, TODAY, Horizon())
    assert doc is not None
    p_alive = bgnbd.p_alive(MODEL.bgnbd, library.frequency, library.recency, library.age)
    assert doc["p_alive"] == pytest.approx(float(p_alive[0]))
    assert doc["model_version"] == 3
    assert doc["currency"] == "EUR"
    assert Decimal(doc["predicted_clv"]) >= 0


def test_a_customer_who_never_bought_has_no_scores() -> None:
    visit = parse_event(event_doc("site_visit", customer_id="c-2"), now=NOW)
    customer = rebuild("c-2", [visit], RULES)
    assert customer is not None
    assert scores(MODEL, customer, TODAY, Horizon()) is None


def test_a_customer_without_a_spend_model_gets_no_clv() -> None:
    customer = customer_of([(0, Decimal(10)), (60 * 24 * 9, Decimal(20))])
    model = ModelVersion(3, START, MODEL.bgnbd, gamma_gamma={})
    doc = scores(model, customer, TODAY, Horizon())
    assert doc is not None
    assert doc["predicted_clv"] is None
    assert 0 < doc["p_alive"] <= 1


def test_a_refit_with_too_few_repeat_customers_is_refused() -> None:
    groups = [PurchaseGroup(x=1, t_x_days=10, age_days=50, customers=5), PurchaseGroup(0, 0, 9, 40)]
    row = fit_models(groups, [], min_repeat_customers=10)
    assert row["outcome"] == "refused"
    assert row["customers"] == 45
    assert row["repeat_customers"] == 5
    assert "fewer than the 10" in row["reason"]


def test_a_refit_fits_every_currency_with_enough_repeat_customers() -> None:
    rng = np.random.default_rng(7)
    groups = [
        PurchaseGroup(int(x), int(t), int(t + a), 1)
        for x, t, a in zip(
            rng.poisson(1.5, 400), rng.integers(0, 200, 400), rng.integers(0, 100, 400), strict=True
        )
    ]
    spends = [("EUR", 2, float(m)) for m in rng.gamma(6, 5, 60)] + [("USD", 1, 10.0)] * 3
    row = fit_models(groups, spends, min_repeat_customers=10)
    assert row["outcome"] == "fitted"
    assert set(row["bgnbd"]) == {"r", "alpha", "a", "b"}
    assert set(row["gamma_gamma"]) == {"EUR"}
    assert row["gamma_gamma"]["EUR"]["customers"] == 60
    assert "USD (3 repeat customers)" in row["reason"]
