"""The predictive KPIs through the metrics API on real Postgres: customers' purchase-day facts
(``customers`` rows as the stage engine keeps them), a fitted model row, and purchases counted
by the metrics handler. ``clv_predicted`` and ``expected_purchases_90d`` equal the library's
scores computed directly from the same facts, and are null without a model."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import numpy as np
import pytest
from pyroaring import BitMap
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.model_schema import model_fits
from clm_infra.schema import customers, metrics_customer_numbers
from clm_infra.settings import CommonSettings
from clm_metrics.app import create_app
from clm_metrics.forecasts import Forecasts
from clm_metrics.handler import LifecycleHandler
from clm_metrics.settings import MetricsSettings
from clm_predict.bgnbd import BgNbdParams, expected_purchases
from clm_predict.clv import MONTH_DAYS, clv
from clm_predict.gamma_gamma import GammaGammaParams
from clm_predict.live import Horizon
from tests.integration.apps import app_client
from tests.keys import READ
from tests.records import unkeyed

BG = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GG = {"p": 6.25, "q": 3.74, "v": 15.44, "customers": 120}
#: (customer, first purchase, last purchase, purchase days, repeat spend, currency)
Facts = tuple[str, datetime, datetime, int, Decimal, str]


def histories(now: datetime) -> list[Facts]:
    """Seeded facts: mostly EUR buyers, some in USD, some in several currencies ("*")."""
    rng = random.Random(1931)
    out = []
    for i in range(60):
        first = now - timedelta(days=rng.randint(2, 300), hours=rng.randint(0, 23))
        last = first + (now - first) * rng.random()
        span = (last.date() - first.date()).days
        days = 1 if span == 0 else rng.randint(2, min(span + 1, 12))
        last = first if days == 1 else last
        spend = Decimal(0) if days == 1 else Decimal(rng.randint(10, 90) * (days - 1))
        currency = "EUR" if i % 6 else ("USD" if i % 12 else "*")
        out.append((f"c-{i:02d}", first, last, days, spend, currency))
    return out


def weeks(facts: Facts, today: date) -> tuple[float, float, float, float]:
    """x, t_x, T and m of one customer, straight from the definitions."""
    _, first, last, days, spend, _ = facts
    span = (last.date() - first.date()).days
    x = days - 1
    return x, span / 7, max((today - first.date()).days, span) / 7, float(spend) / x if x else 0.0


def predicted_clv(facts: Facts, today: date, gg: GammaGammaParams) -> float:
    x, t_x, age, m = weeks(facts, today)
    bg = BgNbdParams(**BG)
    horizon = 12 * MONTH_DAYS / 7
    return float(clv(bg, gg, x, t_x, age, m, horizon=horizon, month=MONTH_DAYS / 7))


def purchase(n: int, who: str, at: datetime, source: str) -> dict[str, Any]:
    return {
        "schema": "clm.lifecycle.v1",
        "record_id": f"r-{n}",
        "event": {
            "event_id": f"e-{n}",
            "type": "purchase",
            "source": source,
            "channel": "email",
            "customer_id": who,
            "occurred_at": at.isoformat(),
            "properties": {"order_id": f"o-{n}", "amount": "20.00", "currency": "EUR"},
        },
        "customer": {"customer_id": who, "first_source": source, "first_channel": "email"},
        "stage_before": "retention",
        "stage_after": "retention",
        "transition": None,
        "first_purchase": False,
        "repeat_purchase": True,
        "reactivation": False,
    }


@pytest.fixture
async def metrics_eur(common: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(MetricsSettings(reporting_currency="EUR"))
    async with app_client(app, "http://metrics") as c:
        yield c


async def store(db: AsyncEngine, facts: list[Facts], now: datetime) -> None:
    rows = [
        {
            "customer_id": who,
            "stage": "retention",
            "stage_entered_at": first,
            "first_seen_at": first,
            "last_seen_at": last,
            "first_source": "web",
            "converted_at": first,
            "last_purchase_at": last,
            "purchases": days,
            "purchase_days": days,
            "repeat_spend": spend,
            "purchase_currency": currency,
        }
        for who, first, last, days, spend, currency in facts
    ]
    never = {"customer_id": "never", "stage": "reach", "stage_entered_at": now}
    never.update(first_seen_at=now, last_seen_at=now, first_source="web")
    async with db.begin() as conn:
        await conn.execute(insert(customers), rows)
        await conn.execute(insert(customers).values(**never))


async def fit(db: AsyncEngine, gamma_gamma: dict[str, Any]) -> None:
    row = {"outcome": "fitted", "trigger": "manual", "as_of": datetime.now(UTC)}
    async with db.begin() as conn:
        await conn.execute(insert(model_fits).values(**row, bgnbd=BG, gamma_gamma=gamma_gamma))


async def kpis(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    answer = await client.get("/v1/kpis", params={"window": "24h", **params}, headers=READ)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_predicted_kpis_equal_the_library_on_the_same_facts(
    metrics_eur: httpx.AsyncClient, db: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    facts = histories(now)
    await store(db, facts, now)
    # purchases in the last 24 hours of half the customers (by source "app" a third of those)
    buyers = [f for i, f in enumerate(facts) if i % 2 == 0]
    records = [
        purchase(n, f[0], now - timedelta(hours=1 + n % 20), "app" if n % 3 == 1 else "web")
        for n, f in enumerate(buyers)
    ]
    async with db.begin() as conn:
        await LifecycleHandler()(conn, unkeyed(records))

    before = await kpis(metrics_eur)
    assert before["purchasing_customers"] == len(buyers)
    assert before["clv_predicted"] is None
    assert before["expected_purchases_90d"] is None

    await fit(db, {"EUR": GG})
    today = now.date()
    gg = GammaGammaParams(p=GG["p"], q=GG["q"], v=GG["v"])
    for source in (None, "app"):
        got = await kpis(metrics_eur, **({"source": source} if source else {}))
        counted = {r["event"]["customer_id"] for r in records}
        if source:
            counted = {r["event"]["customer_id"] for r in records if r["event"]["source"] == source}
        eur = [f for f in facts if f[0] in counted and f[5] == "EUR"]
        want = float(np.mean([predicted_clv(f, today, gg) for f in eur]))
        assert abs(float(got["clv_predicted"]) - want) <= 0.0051, (source, got, want)
    x, t_x, age, _ = (np.array(v) for v in zip(*(weeks(f, today) for f in facts), strict=True))
    base = float(expected_purchases(BgNbdParams(**BG), 90 / 7, x, t_x, age).sum())
    assert got["expected_purchases_90d"] == pytest.approx(base, rel=1e-6)

    # a newer model without a spend model in the reporting currency: no CLV
    await fit(db, {"USD": GG})
    newer = await kpis(metrics_eur)
    assert newer["clv_predicted"] is None
    assert newer["expected_purchases_90d"] == pytest.approx(base, rel=1e-6)

    metrics = (await metrics_eur.get("/metrics")).text
    assert "clm_kpi_expected_purchases_90d" in metrics


async def buys_again(db: AsyncEngine, who: str, now: datetime) -> None:
    """The customer's facts change as the stage engine's would on a purchase."""
    c = customers.c
    async with db.begin() as conn:
        await conn.execute(
            customers.update()
            .where(c.customer_id == who)
            .values(
                purchases=c.purchases + 3,
                purchase_days=c.purchase_days + 3,
                repeat_spend=c.repeat_spend + 300,
                last_purchase_at=now,
            )
        )


async def test_figures_are_kept_per_version_day_and_window_for_their_ttl(
    db: AsyncEngine,
) -> None:
    now, today = datetime.now(UTC), datetime.now(UTC).date()
    facts = histories(now)
    await store(db, facts, now)
    async with db.begin() as conn:
        numbered = await conn.execute(
            insert(metrics_customer_numbers).returning(metrics_customer_numbers.c.number),
            [{"customer_id": f[0]} for f in facts],
        )
        everyone = BitMap(n for (n,) in numbered)
    await fit(db, {"EUR": GG})
    clock = [0.0]
    forecasts = Forecasts("EUR", Horizon(), ttl_s=60, clock=lambda: clock[0])

    async def figures(purchasers: BitMap = everyone) -> tuple[Any, Any]:
        got = await forecasts.predicted(db, purchasers, today)
        return got.clv, got.expected_purchases_90d

    first = await figures()
    await buys_again(db, "c-02", now)
    clock[0] = 59.0
    assert await figures() == first
    clock[0] = 61.0
    later = await figures()
    assert later[0] != first[0]
    assert later[1] != first[1]
    # facts change; another set of purchasers is scored at once, the kept one stays
    await buys_again(db, "c-04", now)
    clock[0] = 62.0
    fewer = BitMap(list(everyone)[1:])
    unkept = await Forecasts("EUR", Horizon(), ttl_s=0).predicted(db, fewer, today)
    assert await figures(fewer) == (unkept.clv, later[1])
    assert unkept.clv != later[0]  # c-04 is in both sets
    assert await figures() == later
    await fit(db, {"EUR": GG})  # a new version is scored at once
    newest = await figures()
    assert newest[0] != later[0]
    assert newest[1] != later[1]
