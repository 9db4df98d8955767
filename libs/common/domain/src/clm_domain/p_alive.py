"""The ``at_risk.p_alive_below`` rule: a customer's BG/NBD P(alive) and the moment it falls
below a threshold, in plain Python (pure: no I/O, no clock, no numpy).

The model (Fader, Hardie & Lee 2005) reads a customer's repeat-purchase summary in weeks, one
transaction per UTC day: ``x`` repeat purchase days (``purchase_days - 1``), ``t_x`` from the
first purchase day to the last, ``T`` from the first purchase day to the day scored (never
less than ``t_x``). For ``x >= 1``

    P(alive) = 1 / (1 + a / (b + x - 1) · ((alpha + T) / (alpha + t_x)) ** (r + x))

falls with ``T`` for fixed ``x`` and ``t_x``, so it crosses a threshold θ once: P(alive) < θ
exactly when ``T > T* = (alpha + t_x) · K ** (1 / (r + x)) - alpha`` with
``K = (1/θ - 1)(b + x - 1) / a``. A customer with ``x = 0`` has P(alive) = 1: never below.

The rule moves a customer at the start (00:00 UTC) of the first UTC day whose ``T`` exceeds
``T*``, and never before its last activity already applied. A customer whose P(alive) is
below θ already on its last purchase day (``K <= 1``: θ above the highest score its ``x``
allows) is left to the inactivity rule, else each purchase would be followed by a move the
next day.

The test for "below on day d" is one expression (:func:`log_odds_inactive` against
:func:`threshold_log_odds`), written the same way in the sweeper's SQL, so Python and
Postgres agree on the day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from clm_domain.customer_state import CustomerState

DAYS_PER_WEEK = 7.0


@dataclass(frozen=True, slots=True)
class AliveModel:
    """One fitted model version's BG/NBD parameters (time in weeks)."""

    version: int
    r: float
    alpha: float
    a: float
    b: float

    def __post_init__(self) -> None:
        for name in ("r", "alpha", "a", "b"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"BG/NBD parameter {name} must be a finite number > 0")


@dataclass(frozen=True, slots=True)
class Lapse:
    """When a customer's P(alive) is below the threshold, its score then, and the reason."""

    at: datetime
    score: float
    reason: str


def threshold_log_odds(threshold: float) -> float:
    """log((1 - θ) / θ): P(alive) < θ exactly when the log-odds of inactivity exceed it."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("the P(alive) threshold must be in (0, 1)")
    return math.log(1.0 / threshold - 1.0)


def log_odds_inactive(model: AliveModel, x: int, span_days: int, age_days: int) -> float:
    """log(P(inactive) / P(alive)) of a customer with ``x >= 1`` repeat days, ``span_days``
    from its first purchase day to its last and ``age_days`` to the day scored (UTC days).

    The sweeper's SQL (``repository.customers``) computes the same expression in the same
    order; keep them in step."""
    xf = float(x)
    t_x = span_days / DAYS_PER_WEEK
    age = max(age_days, span_days) / DAYS_PER_WEEK
    return (
        math.log(model.a)
        - math.log(model.b + xf - 1.0)
        + (model.r + xf) * (math.log(model.alpha + age) - math.log(model.alpha + t_x))
    )


def p_alive(model: AliveModel, x: int, span_days: int, age_days: int) -> float:
    """P(alive) on the day ``age_days`` after the first purchase day (1.0 when ``x = 0``)."""
    if x < 1:
        return 1.0
    odds = log_odds_inactive(model, x, span_days, age_days)
    if odds > 0:
        e = math.exp(-odds)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(odds))


def crossing_age(model: AliveModel, x: int, t_x: float, threshold: float) -> float | None:
    """``T*`` in weeks: P(alive) < θ exactly when ``T > T*`` (None: ``x = 0``, never; or
    ``K <= 1``, below θ already at ``T = t_x``). ``math.inf`` when ``T*`` is beyond any date."""
    if x < 1:
        return None
    log_k = threshold_log_odds(threshold) + math.log(model.b + x - 1.0) - math.log(model.a)
    if log_k <= 0:
        return None
    log_age = math.log(model.alpha + t_x) + log_k / (model.r + x)
    if log_age > 700.0:  # exp would overflow: a crossing no calendar holds
        return math.inf
    return math.exp(log_age) - model.alpha


def crossing_day(
    model: AliveModel, x: int, span_days: int, threshold: float, limit_days: int
) -> int | None:
    """The first day (counted from the first purchase day) on which P(alive) < θ, if before
    ``limit_days`` (None: never, below θ already on the last purchase day, or not before
    the limit). The closed form gives the day; the log-odds test settles rounding."""
    limit = threshold_log_odds(threshold)

    def below(day: int) -> bool:
        return log_odds_inactive(model, x, span_days, day) > limit

    if x < 1 or below(span_days):
        return None
    t_star = crossing_age(model, x, span_days / DAYS_PER_WEEK, threshold)
    if t_star is None:  # K <= 1 by rounding only: not below on the last purchase day
        t_star = span_days / DAYS_PER_WEEK
    if t_star * DAYS_PER_WEEK >= limit_days:
        return None
    day = max(math.floor(t_star * DAYS_PER_WEEK) + 1, span_days + 1)
    for _ in range(3):  # the closed form is off by rounding at most
        if day - 1 > span_days and below(day - 1):
            day -= 1
        elif not below(day):
            day += 1
    if not below(day) or (day - 1 > span_days and below(day - 1)) or day >= limit_days:
        return None
    return day


def _utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def predicted_lapse(
    state: CustomerState, model: AliveModel, threshold: float, before: datetime
) -> Lapse | None:
    """When the customer's P(alive) falls below ``threshold``, if that is before ``before``
    (the inactivity move's time: a later crossing never matters). At the start of the UTC day
    it does, or at its last activity if that came later (a new model version can put the
    crossing before events already applied)."""
    if state.converted_at is None or state.last_purchase_at is None:
        return None
    x = state.purchase_days - 1
    if x < 1:
        return None
    first = _utc_day(state.converted_at)
    span = (_utc_day(state.last_purchase_at) - first).days
    limit = (_utc_day(before) - first).days + 1
    day = crossing_day(model, x, span, threshold, limit)
    if day is None:
        return None
    at = max(datetime.combine(first + timedelta(days=day), time(), UTC), state.last_seen_at)
    if at >= before:
        return None
    score = p_alive(model, x, span, (_utc_day(at) - first).days)
    return Lapse(at, score, lapse_reason(score, threshold, model.version))


def lapse_reason(score: float, threshold: float, version: int) -> str:
    """``p_alive 0.2712 < 0.3 (model 7)``: the score cut (not rounded) to 4 places, so it
    reads below the threshold it fell under."""
    shown = math.floor(score * 10_000) / 10_000
    return f"p_alive {shown:g} < {threshold} (model {version})"
