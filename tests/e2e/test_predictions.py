"""Predictions on the real stack: purchases in through the ingest, ``clm model fit``, and the
scores on the read API, checked against the model library fitted on the same transactions.

The engine derives each customer's repeat-purchase summary from its running facts and one SQL
query; the oracle derives it from the raw transactions (``clm_predict.rfm``). Equal parameters
and equal scores show the facts, the query and the day arithmetic are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest

from clm_predict import bgnbd
from clm_predict.bgnbd import BgNbdParams
from clm_predict.gamma_gamma import GammaGammaParams
from clm_predict.rfm import summary_from_transactions
from clm_predict.simulate import simulate
from tests.e2e.conftest import Stack, running_stack
from tests.e2e.test_clm_commands import clm, event, post
from tests.integration.conftest import eventually
from tests.keys import READ

CUSTOMERS = 120
MIN_REPEAT = 20


def transactions(now: datetime) -> list[tuple[str, datetime, Decimal]]:
    """Seeded purchase histories drawn from the models themselves (``clm_predict.simulate``),
    the customers first buying 8 to 40 weeks ago; a few buy twice on one day (one transaction
    by the models' rule)."""
    ages = np.random.default_rng(31).uniform(8, 40, CUSTOMERS)
    sim = simulate(
        BgNbdParams(r=0.6, alpha=5.0, a=0.8, b=2.5), GammaGammaParams(p=6, q=4, v=15), ages, 31
    )
    out: list[tuple[str, datetime, Decimal]] = []
    for customer, weeks, amount in zip(sim.customer, sim.time, sim.amount, strict=True):
        first = now - timedelta(weeks=float(ages[customer]), hours=3)
        value = max(Decimal(float(amount)).quantize(Decimal("0.01")), Decimal("0.01"))
        out.append((f"p-{customer:03d}", first + timedelta(weeks=float(weeks)), value))
    return out


async def get(stack: Stack, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=stack.stage_engine) as client:
        response = await client.get(path, headers=READ, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def predicting_stack(prepared_env: dict[str, str], tmp_path: Any) -> Any:
    env = {
        **prepared_env,
        "CLM_MODEL_MIN_REPEAT_CUSTOMERS": str(MIN_REPEAT),
        "CLM_REPORTING_CURRENCY": "EUR",
    }
    with running_stack(env, tmp_path) as started:
        yield started


async def post_all(stack: Stack, bought: list[tuple[str, datetime, Decimal]]) -> None:
    """Every transaction as a purchase through the ingest; back when the engine has them all."""
    docs = [
        event("purchase", c, at, order_id=f"o-{n}", amount=str(amount), currency="EUR")
        for n, (c, at, amount) in enumerate(bought)
    ]
    for start in range(0, len(docs), 200):
        await post(stack, *docs[start : start + 200])

    async def all_counted() -> bool:
        page = await get(stack, "/v1/customers", limit=1000)
        return sum(int(c["purchases"]) for c in page["customers"]) == len(bought)

    await eventually(all_counted, timeout=60)


async def listed_below(stack: Stack, bound: float) -> list[str]:
    """Every page of ``p_alive_lt=bound``, small pages to walk the cursor."""
    listed: list[str] = []
    cursor: str | None = None
    while True:
        params = {"p_alive_lt": bound, "limit": 7, **({"cursor": cursor} if cursor else {})}
        page = await get(stack, "/v1/customers", **params)
        listed += [c["customer_id"] for c in page["customers"]]
        assert all(c["predictions"]["p_alive"] < bound for c in page["customers"])
        cursor = page["next_cursor"]
        if cursor is None:
            return listed


async def test_a_fit_with_too_few_repeat_customers_is_refused(predicting_stack: Stack) -> None:
    refused = await clm(predicting_stack, "model", "fit", "--json")
    assert refused.status == 1, refused.err
    assert refused.json()["outcome"] == "refused"
    assert "repeat purchase" in refused.json()["reason"]
    status = await clm(predicting_stack, "status")
    assert "no model fitted yet" in status.out
    assert "last refit refused" in status.out


async def test_fit_on_the_stack_scores_customers_as_the_library_does(
    predicting_stack: Stack,
) -> None:
    stack = predicting_stack
    bought = transactions(datetime.now(UTC))
    await post_all(stack, bought)
    fitted = await clm(stack, "model", "fit", "--json")
    assert fitted.status == 0, fitted.err
    model = fitted.json()
    assert model["outcome"] == "fitted"
    await kpis_agree_with_the_scores(stack, {c for c, _, _ in bought}, len(bought))
    oracle = summary_from_transactions(bought, calibration_end=datetime.now(UTC).date())
    assert model["customers"] == CUSTOMERS
    assert model["repeat_customers"] == oracle.repeat_customers
    assert oracle.repeat_customers >= MIN_REPEAT
    # the engine's summary is the library's: the same likelihood at the engine's parameters,
    # the same maximum, the same scores (the parameters themselves can differ where the
    # likelihood is flat, so they are not compared one by one)
    params = BgNbdParams(**{k: model["bgnbd"][k] for k in ("r", "alpha", "a", "b")})
    at_engine = bgnbd.log_likelihood(params, oracle.frequency, oracle.recency, oracle.age)
    assert float(np.sum(at_engine)) == pytest.approx(model["log_likelihood"], rel=1e-9)
    assert bgnbd.fit(oracle).log_likelihood == pytest.approx(model["log_likelihood"], rel=1e-5)
    assert set(model["gamma_gamma"]) == {"EUR"}

    p_alive = bgnbd.p_alive(params, oracle.frequency, oracle.recency, oracle.age)
    by_id = dict(zip(oracle.customer_ids, np.atleast_1d(p_alive), strict=True))
    for customer in ("p-000", "p-017", "p-042"):
        predictions = (await get(stack, f"/v1/customers/{customer}"))["predictions"]
        assert predictions["model_version"] == model["version"]
        assert predictions["p_alive"] == pytest.approx(by_id[customer], rel=1e-9)
        assert predictions["expected_purchases_90d"] >= 0
        assert predictions["currency"] == "EUR"
        assert Decimal(predictions["predicted_clv"]) >= 0

    listed = await listed_below(stack, 0.5)
    assert listed == sorted(c for c, p in by_id.items() if p < 0.5)
    assert listed, "the seeded histories have customers who stopped buying"

    shown = await clm(stack, "model", "show", "--json")
    assert shown.status == 0, shown.err
    assert shown.json()["current"]["version"] == model["version"]
    status = await clm(stack, "status")
    assert f"model version {model['version']}" in status.out


async def kpis_agree_with_the_scores(stack: Stack, ids: set[str], purchases: int) -> None:
    """The metrics service's predictive KPIs over a window holding every purchase: the mean
    of the customers' predicted CLV and the sum of their expected purchases, as the engine's
    read API gives them; and its Prometheus gauges show them."""
    async with httpx.AsyncClient(base_url=stack.metrics) as client:

        async def counted() -> dict[str, Any] | None:
            answer = await client.get("/v1/kpis", params={"window": "365d"}, headers=READ)
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body if body["purchases"] == purchases else None

        kpis = await eventually(counted, timeout=60)
        scores = [(await get(stack, f"/v1/customers/{c}"))["predictions"] for c in sorted(ids)]
        assert kpis["purchasing_customers"] == len(ids)
        assert {s["currency"] for s in scores} == {"EUR"}
        mean = sum((Decimal(s["predicted_clv"]) for s in scores), Decimal(0)) / len(scores)
        assert abs(Decimal(kpis["clv_predicted"]) - mean) <= Decimal("0.01")
        expected = sum(s["expected_purchases_90d"] for s in scores)
        assert kpis["expected_purchases_90d"] == pytest.approx(expected, rel=1e-6)

        async def gauges() -> str | None:
            text = (await client.get("/metrics")).text
            line = next(
                (s for s in text.splitlines() if s.startswith("clm_kpi_expected_purchases_90d ")),
                "",
            )
            shown = line and float(line.split()[1]) == pytest.approx(expected, rel=1e-6)
            return text if shown and 'clm_kpi_clv_predicted{window="90d"}' in text else None

        await eventually(gauges, timeout=30)
