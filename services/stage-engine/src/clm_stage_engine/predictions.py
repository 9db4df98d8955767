"""Each customer's predictions from the current model version: pure, no I/O, no clock.

The models (:mod:`clm_predict`) read a customer's repeat-purchase summary in weeks, under the
papers' "one transaction per day" rule: ``x`` repeat purchase days, ``t_x`` weeks from the
first purchase day to the last, ``T`` weeks from the first purchase day to the day scored, and
``m`` the mean value of the repeat days (in the customer's one purchase currency). All of it
follows from the customer's running facts (``purchase_days``, ``converted_at``,
``last_purchase_at``, ``repeat_spend``, ``purchase_currency``) and today's date, so the scores
are live after every event without a row being rewritten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from clm_domain.customer_state import CustomerState
from clm_domain.p_alive import AliveModel
from clm_predict.bgnbd import BgNbdParams, expected_purchases, p_alive
from clm_predict.clv import MONTH_DAYS, clv
from clm_predict.gamma_gamma import GammaGammaParams

DAYS_PER_WEEK = 7.0
#: The horizon of ``expected_purchases_90d``, in weeks.
NINETY_DAYS = 90 / DAYS_PER_WEEK


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One fitted row of ``model_fits``: what the scores are computed with."""

    version: int
    fitted_at: datetime
    bgnbd: BgNbdParams
    gamma_gamma: dict[str, GammaGammaParams] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Horizon:
    """What predicted CLV sums over (the ``CLM_MODEL_…`` settings)."""

    months: int = 12
    monthly_discount: float = 0.0


@dataclass(frozen=True, slots=True)
class Rfm:
    """A customer's repeat-purchase summary in weeks (``m``: mean repeat-day value)."""

    x: int
    t_x: float
    T: float
    m: float
    currency: str | None


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def rfm_of(customer: CustomerState, today: date) -> Rfm | None:
    """The summary the models read, on ``today`` (a UTC date); None: never purchased."""
    if customer.converted_at is None or customer.last_purchase_at is None:
        return None
    first = utc_day(customer.converted_at)
    last = utc_day(customer.last_purchase_at)
    x = max(customer.purchase_days - 1, 0)
    m = float(customer.repeat_spend / x) if x else 0.0
    return Rfm(
        x=x,
        t_x=(last - first).days / DAYS_PER_WEEK,
        T=max((today - first).days, (last - first).days) / DAYS_PER_WEEK,
        m=m,
        currency=customer.purchase_currency,
    )


def p_alive_of(model: ModelVersion, customer: CustomerState, today: date) -> float:
    """P(alive) of a customer who purchased (1.0 for one who never did: nothing to lose)."""
    rfm = rfm_of(customer, today)
    return 1.0 if rfm is None else float(p_alive(model.bgnbd, rfm.x, rfm.t_x, rfm.T))


def scores(
    model: ModelVersion, customer: CustomerState, today: date, horizon: Horizon
) -> dict[str, Any] | None:
    """The ``predictions`` object of a customer (None: it never purchased, nothing to say)."""
    rfm = rfm_of(customer, today)
    if rfm is None:
        return None
    bg = model.bgnbd
    doc: dict[str, Any] = {
        "model_version": model.version,
        "fitted_at": model.fitted_at.isoformat(),
        "p_alive": float(p_alive(bg, rfm.x, rfm.t_x, rfm.T)),
        "expected_purchases_90d": float(expected_purchases(bg, NINETY_DAYS, rfm.x, rfm.t_x, rfm.T)),
        "predicted_clv": None,
        "currency": None,
        "horizon_months": horizon.months,
    }
    gg = model.gamma_gamma.get(rfm.currency or "")
    if gg is not None:
        value = float(
            clv(
                bg,
                gg,
                rfm.x,
                rfm.t_x,
                rfm.T,
                rfm.m,
                horizon=horizon.months * MONTH_DAYS / DAYS_PER_WEEK,
                month=MONTH_DAYS / DAYS_PER_WEEK,
                monthly_discount=horizon.monthly_discount,
            )
        )
        if math.isfinite(value):  # infinite when the spend model's population mean is
            doc["predicted_clv"] = str(Decimal(value).quantize(Decimal("0.01")))
            doc["currency"] = rfm.currency
    return doc


def alive_model(model: ModelVersion | None) -> AliveModel | None:
    """The version's BG/NBD parameters as the lifecycle's P(alive) rule reads them."""
    if model is None:
        return None
    bg = model.bgnbd
    return AliveModel(version=model.version, r=bg.r, alpha=bg.alpha, a=bg.a, b=bg.b)


def version_from_row(row: dict[str, Any]) -> ModelVersion:
    """A fitted ``model_fits`` row as the version the scores use."""
    bg = row["bgnbd"]
    return ModelVersion(
        version=int(row["id"]),
        fitted_at=row["attempted_at"],
        bgnbd=BgNbdParams(r=bg["r"], alpha=bg["alpha"], a=bg["a"], b=bg["b"]),
        gamma_gamma={
            currency: GammaGammaParams(p=gg["p"], q=gg["q"], v=gg["v"])
            for currency, gg in (row["gamma_gamma"] or {}).items()
        },
    )
