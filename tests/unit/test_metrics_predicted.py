"""The predictive KPIs' pure parts: the summary of live facts equals the library's summary of
the raw transactions, and the grouped KPIs equal the per-customer scores computed directly."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_metrics.formulas import WindowInputs, compute_kpis
from clm_metrics.predicted import FactGroups, Predicted, base_expected_purchases, mean_clv
from clm_predict.bgnbd import BgNbdParams, expected_purchases
from clm_predict.clv import MONTH_DAYS, clv
from clm_predict.gamma_gamma import GammaGammaParams
from clm_predict.live import Horizon, ModelVersion, summary_of_facts
from clm_predict.rfm import day_number, summary_from_transactions

TODAY = date(2026, 12, 7)
DAY = day_number(TODAY)
MODEL = ModelVersion(
    version=3,
    fitted_at=datetime(2026, 12, 7, tzinfo=UTC),
    bgnbd=BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426),
    gamma_gamma={"EUR": GammaGammaParams(p=6.25, q=3.74, v=15.44)},
)
HORIZON = Horizon(months=12, monthly_discount=0.01)

#: (first day before today, span to the last day, purchase days, repeat spend)
FACTS = st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 400), st.integers(1, 30), st.integers(0, 5000)),
    min_size=1,
    max_size=40,
)


def _customers(facts: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, float]]:
    """(first day, last day, purchase days, repeat spend) of valid customers."""
    out = []
    for back, span, days, spend in facts:
        first = DAY - back
        last = min(first + span, DAY + 1)  # a purchase may be dated a day ahead
        days = min(days, last - first + 1)
        last = first if days == 1 else last
        out.append((first, last, days, float(spend) if days > 1 else 0.0))
    return out


def _grouped(customers: list[tuple[int, int, int, float]]) -> FactGroups:
    groups: dict[tuple[int, int, int], list[float]] = {}
    for first, last, days, spend in customers:
        groups.setdefault((first, last, days), []).append(spend)
    keys = list(groups)
    return FactGroups(
        first_day=np.array([k[0] for k in keys], dtype=np.int64),
        last_day=np.array([k[1] for k in keys], dtype=np.int64),
        purchase_days=np.array([k[2] for k in keys], dtype=np.int64),
        customers=np.array([len(groups[k]) for k in keys], dtype=np.int64),
        repeat_spend=np.array([sum(groups[k]) / len(groups[k]) for k in keys]),
    )


def _direct(first: int, last: int, days: int, spend: float) -> tuple[float, float, float, float]:
    """x, t_x, T (weeks) and m of one customer, from the definitions."""
    x = days - 1
    return x, (last - first) / 7, max(DAY - first, last - first) / 7, spend / x if x else 0.0


@settings(max_examples=60, deadline=None)
@given(FACTS)
def test_grouped_kpis_equal_the_scores_of_each_customer(
    facts: list[tuple[int, int, int, int]],
) -> None:
    customers = _customers(facts)
    groups = _grouped(customers)
    each_clv, each_expected = [], []
    for c in customers:
        x, t_x, age, m = _direct(*c)
        gg = MODEL.gamma_gamma["EUR"]
        each_clv.append(
            float(
                clv(
                    MODEL.bgnbd,
                    gg,
                    x,
                    t_x,
                    age,
                    m,
                    horizon=12 * MONTH_DAYS / 7,
                    month=MONTH_DAYS / 7,
                    monthly_discount=0.01,
                )
            )
        )
        each_expected.append(float(expected_purchases(MODEL.bgnbd, 90 / 7, x, t_x, age)))
    got = mean_clv(MODEL, "EUR", groups, DAY, HORIZON)
    assert got == pytest.approx(sum(each_clv) / len(each_clv), rel=1e-9)
    assert base_expected_purchases(MODEL, groups, DAY) == pytest.approx(
        sum(each_expected), rel=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(FACTS)
def test_the_summary_of_facts_is_the_librarys_summary_of_the_transactions(
    facts: list[tuple[int, int, int, int]],
) -> None:
    """Transactions with those facts (first day, last day, days between, the repeat spend
    spread over the repeat days) summarised by ``clm_predict.rfm`` give the same numbers."""
    for first, last, days, spend in _customers(facts):
        start = datetime(1970, 1, 1, 13, tzinfo=UTC)
        between = sorted({first + 1 + k for k in range(max(last - first - 1, 0))})[: days - 2]
        when = [first, *between, last][:days] if days > 1 else [first]
        bought = [("c", start + timedelta(days=when[0]), Decimal(10))]
        bought += [
            ("c", start + timedelta(days=d), Decimal(repr(spend / (days - 1)))) for d in when[1:]
        ]
        end = (start + timedelta(days=max(DAY, last))).date()
        library = summary_from_transactions(bought, calibration_end=end)
        live = summary_of_facts(first, last, days, spend, DAY)
        assert float(live.x) == library.frequency[0]
        assert float(live.t_x) == pytest.approx(library.recency[0])
        assert float(live.m) == pytest.approx(library.monetary[0])
        if last <= DAY:
            assert float(live.T) == pytest.approx(library.age[0])


def test_no_spend_model_no_customers_or_no_finite_mean_is_null() -> None:
    groups = _grouped(_customers([(30, 10, 3, 120)]))
    assert mean_clv(MODEL, "USD", groups, DAY, HORIZON) is None
    assert mean_clv(MODEL, "EUR", _grouped([]), DAY, HORIZON) is None
    no_mean = ModelVersion(3, MODEL.fitted_at, MODEL.bgnbd, {"EUR": GammaGammaParams(6, 0.9, 15)})
    assert mean_clv(no_mean, "EUR", _grouped(_customers([(30, 0, 1, 0)])), DAY, HORIZON) is None
    assert base_expected_purchases(MODEL, _grouped([]), DAY) == 0.0


def test_the_kpis_show_the_predictions_and_null_without() -> None:
    empty = WindowInputs(totals={}, stages_at_start={}, stages_at_end={}, all_time={})
    kpis = compute_kpis(empty, reporting_currency="EUR")
    assert kpis["clv_predicted"] is None
    assert kpis["expected_purchases_90d"] is None
    predicted = Predicted(clv=Decimal("118.204999"), expected_purchases_90d=41.123456789)
    shown = compute_kpis(
        WindowInputs(
            totals={}, stages_at_start={}, stages_at_end={}, all_time={}, predicted=predicted
        ),
        reporting_currency="EUR",
    )
    assert shown["clv_predicted"] == "118.20"
    assert shown["expected_purchases_90d"] == 41.123457
    assert not math.isnan(shown["expected_purchases_90d"])
