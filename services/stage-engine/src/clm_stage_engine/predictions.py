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
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from clm_domain.customer_state import CustomerState
from clm_domain.p_alive import AliveModel
from clm_domain.segments.compile import ScoreSource
from clm_predict.bgnbd import expected_purchases, p_alive
from clm_predict.live import (
    DAYS_PER_WEEK,
    NINETY_DAYS,
    Horizon,
    ModelVersion,
    horizon_clv,
    summary_of_facts,
    version_from_row,
)
from clm_predict.rfm import day_number

__all__ = [
    "DAYS_PER_WEEK",
    "NINETY_DAYS",
    "Horizon",
    "ModelVersion",
    "Rfm",
    "alive_model",
    "p_alive_of",
    "rfm_of",
    "score_source",
    "scores",
    "version_from_row",
]


@dataclass(frozen=True, slots=True)
class Rfm:
    """A customer's repeat-purchase summary in weeks (``m``: mean repeat-day value)."""

    x: int
    t_x: float
    T: float
    m: float
    currency: str | None


def rfm_of(customer: CustomerState, today: date) -> Rfm | None:
    """The summary the models read, on ``today`` (a UTC date); None: never purchased."""
    if customer.converted_at is None or customer.last_purchase_at is None:
        return None
    summary = summary_of_facts(
        day_number(customer.converted_at),
        day_number(customer.last_purchase_at),
        customer.purchase_days,
        float(customer.repeat_spend),
        day_number(today),
    )
    return Rfm(
        x=int(summary.x),
        t_x=float(summary.t_x),
        T=float(summary.T),
        m=float(summary.m),
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
        value = float(horizon_clv(bg, gg, rfm.x, rfm.t_x, rfm.T, rfm.m, horizon))
        if math.isfinite(value):  # infinite when the spend model's population mean is
            doc["predicted_clv"] = str(Decimal(value).quantize(Decimal("0.01")))
            doc["currency"] = rfm.currency
    return doc


def score_source(model: ModelVersion | None, horizon: Horizon) -> ScoreSource | None:
    """The customers' scores as segment conditions read them (None: no model fitted)."""
    if model is None:
        return None

    def source(customer: CustomerState, today: date) -> dict[str, float | None] | None:
        doc = scores(model, customer, today, horizon)
        if doc is None:
            return None
        clv = doc["predicted_clv"]
        return {
            "p_alive": doc["p_alive"],
            "expected_purchases_90d": doc["expected_purchases_90d"],
            "predicted_clv": None if clv is None else float(clv),
        }

    return source


def alive_model(model: ModelVersion | None) -> AliveModel | None:
    """The version's BG/NBD parameters as the lifecycle's P(alive) rule reads them."""
    if model is None:
        return None
    bg = model.bgnbd
    return AliveModel(version=model.version, r=bg.r, alpha=bg.alpha, a=bg.a, b=bg.b)
