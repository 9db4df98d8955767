"""Refit the predictive models from every customer's facts, by one replica at a time.

:func:`fit_models` is the pure part (the inputs in, the row to store out); :func:`refit` reads
the inputs, fits in a worker thread (seconds of CPU the event loop must not wait on) and stores
the row, under a session advisory lock. A refit never replaces good parameters with a fit of
too little data: it stores a refused row saying why, and the scores keep the previous version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_predict import bgnbd, gamma_gamma
from clm_predict.rfm import RfmSummary
from clm_stage_engine.predictions import DAYS_PER_WEEK
from clm_stage_engine.repository import models
from clm_stage_engine.repository.models import PurchaseGroup

log = logging.getLogger(__name__)


def fit_models(
    groups: Sequence[PurchaseGroup],
    spends: Sequence[tuple[str, int, float]],
    *,
    min_repeat_customers: int,
) -> dict[str, Any]:
    """The ``model_fits`` row (without its id, time, trigger and ``as_of``) of these inputs."""
    started = time.perf_counter()
    n = np.array([g.customers for g in groups], dtype=np.int64)
    x = np.array([g.x for g in groups], dtype=np.float64)
    customers, repeat = int(n.sum()), int(n[x > 0].sum())
    row: dict[str, Any] = {"customers": customers, "repeat_customers": repeat}
    if repeat < min_repeat_customers:
        reason = (
            f"{repeat} customers with a repeat purchase, fewer than the {min_repeat_customers} "
            "a fit needs (CLM_MODEL_MIN_REPEAT_CUSTOMERS): the previous parameters stay"
        )
        return {**row, "outcome": "refused", "reason": reason}
    summary = RfmSummary(
        customer_ids=(),  # the fit reads the numbers only
        frequency=np.repeat(x, n),
        recency=np.repeat(np.array([g.t_x_days for g in groups]) / DAYS_PER_WEEK, n),
        age=np.repeat(np.array([g.age_days for g in groups]) / DAYS_PER_WEEK, n),
        monetary=np.zeros(customers),
    )
    fit = bgnbd.fit(summary)
    spend_models, skipped = _spend_models(spends, min_repeat_customers)
    row.update(
        outcome="fitted",
        reason=skipped,
        log_likelihood=float(fit.log_likelihood),
        bgnbd={k: float(v) for k, v in asdict(fit.params).items()},
        gamma_gamma=spend_models,
        duration_s=time.perf_counter() - started,
    )
    return row


def _spend_models(
    spends: Sequence[tuple[str, int, float]], min_customers: int
) -> tuple[dict[str, Any], str]:
    """One Gamma-Gamma model per currency with enough repeat customers (and what was left)."""
    by_currency: dict[str, list[tuple[int, float]]] = {}
    for currency, x, m in spends:
        by_currency.setdefault(currency, []).append((x, m))
    out: dict[str, Any] = {}
    left: list[str] = []
    for currency, rows in sorted(by_currency.items()):
        if len(rows) < min_customers:
            left.append(f"{currency} ({len(rows)} repeat customers)")
            continue
        xs, ms = np.array(rows, dtype=np.float64).T
        zeros = np.zeros(len(rows))
        summary = RfmSummary(customer_ids=(), frequency=xs, recency=zeros, age=zeros, monetary=ms)
        params = gamma_gamma.fit(summary).params
        out[currency] = {**{k: float(v) for k, v in asdict(params).items()}, "customers": len(rows)}
    reason = f"no spend model for {', '.join(left)}: too few repeat customers" if left else ""
    return out, reason


async def refit(
    engine: AsyncEngine,
    now: datetime,
    *,
    trigger: str,
    min_repeat_customers: int,
    not_since: timedelta | None = None,
) -> dict[str, Any] | None:
    """Fit and store; None when another replica holds the lock, or (``not_since``) when a
    refit of this trigger ran that recently (so N replicas on a schedule fit once)."""
    async with engine.connect() as lock_conn:
        if not await models.try_refit_lock(lock_conn):
            return None
        await lock_conn.commit()
        try:
            return await _refit_locked(engine, now, trigger, min_repeat_customers, not_since)
        finally:
            await models.release_refit_lock(lock_conn)
            await lock_conn.commit()


async def _refit_locked(
    engine: AsyncEngine,
    now: datetime,
    trigger: str,
    min_repeat_customers: int,
    not_since: timedelta | None,
) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        if not_since is not None:
            last = await models.latest_attempt(conn, trigger)
            if last is not None and last["attempted_at"] > now - not_since:
                return None
        groups = await models.purchase_summary(conn, now.date())
        spends = await models.repeat_spend(conn)
    try:
        row = await asyncio.to_thread(
            fit_models, groups, spends, min_repeat_customers=min_repeat_customers
        )
    except (ArithmeticError, ValueError, RuntimeError) as exc:
        row = {
            "outcome": "refused",
            "reason": f"the fit failed: {exc}",
            "customers": sum(g.customers for g in groups),
            "repeat_customers": sum(g.customers for g in groups if g.x > 0),
        }
    async with engine.begin() as conn:
        return await models.store_fit(conn, {**row, "trigger": trigger, "as_of": now})


async def refit_forever(
    engine: AsyncEngine,
    clock: Callable[[], datetime],
    *,
    every_s: float,
    min_repeat_customers: int,
    fitted: Callable[[dict[str, Any]], None],
    stopping: asyncio.Event,
) -> None:
    """Refit every ``every_s`` seconds, by whichever replica comes first (see :func:`refit`)."""
    while not stopping.is_set():
        try:
            row = await refit(
                engine,
                clock(),
                trigger="schedule",
                min_repeat_customers=min_repeat_customers,
                not_since=timedelta(seconds=every_s * 0.9),
            )
            if row is not None:
                fitted(row)
                log.info(
                    "models refitted" if row["outcome"] == "fitted" else "models not refitted",
                    extra={"version": row["id"], "reason": row["reason"]},
                )
        except Exception:
            log.warning("refit failed; retrying next round", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=every_s)
