"""The predictive models' SQL: the fits' inputs from the customers' facts, the fits' rows, and
the lock that elects the one replica that refits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState
from clm_infra.model_schema import model_fits
from clm_infra.schema import customers
from clm_stage_engine.repository.rows import state_from_row

#: The session-level advisory lock a refit holds (one fit at a time over all replicas).
REFIT_LOCK_ID = 0x636C6D5F666974  # "clm_fit"

#: Every purchasing customer's summary in UTC days, grouped: customers with the same repeat
#: days, first-to-last span and age are one row with their count (the fit weighs them).
_PURCHASE_SUMMARY = text(
    """
    SELECT purchase_days - 1 AS x, span AS t_x_days, GREATEST(age, span) AS age_days,
           count(*) AS customers
    FROM (
        SELECT purchase_days,
               (last_purchase_at AT TIME ZONE 'UTC')::date
                 - (converted_at AT TIME ZONE 'UTC')::date AS span,
               CAST(:today AS date) - (converted_at AT TIME ZONE 'UTC')::date AS age
        FROM customers
        WHERE converted_at IS NOT NULL AND last_purchase_at IS NOT NULL AND purchase_days >= 1
    ) AS summary
    GROUP BY 1, 2, 3
    """
)

#: Every repeat customer's repeat days and their summed value, in its one purchase currency.
_REPEAT_SPEND = text(
    """
    SELECT purchase_currency, purchase_days - 1 AS x, repeat_spend
    FROM customers
    WHERE purchase_days >= 2 AND repeat_spend > 0
      AND purchase_currency IS NOT NULL AND purchase_currency <> '*'
    """
)


@dataclass(frozen=True, slots=True)
class PurchaseGroup:
    """Customers with the same summary (in days) and how many of them."""

    x: int
    t_x_days: int
    age_days: int
    customers: int


async def purchase_summary(conn: AsyncConnection, today: date) -> list[PurchaseGroup]:
    rows = await conn.execute(_PURCHASE_SUMMARY, {"today": today})
    return [PurchaseGroup(int(x), int(t), int(a), int(n)) for x, t, a, n in rows]


async def repeat_spend(conn: AsyncConnection) -> list[tuple[str, int, float]]:
    """``(currency, repeat days, mean value of a repeat day)`` of every repeat customer."""
    rows = await conn.execute(_REPEAT_SPEND)
    return [(str(c), int(x), float(spend) / int(x)) for c, x, spend in rows]


async def try_refit_lock(conn: AsyncConnection) -> bool:
    """The refit lock for this connection's session, if no other session holds it."""
    got = await conn.scalar(text("SELECT pg_try_advisory_lock(:id)"), {"id": REFIT_LOCK_ID})
    return bool(got)


async def release_refit_lock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": REFIT_LOCK_ID})


async def store_fit(conn: AsyncConnection, row: dict[str, Any]) -> dict[str, Any]:
    """Insert a fit (or a refused refit); the stored row, with its id and time."""
    stored = await conn.execute(insert(model_fits).values(**row).returning(*model_fits.c))
    return dict(stored.one()._mapping)


async def latest_fitted(conn: AsyncConnection) -> dict[str, Any] | None:
    """The newest row that fitted: the model version the scores use."""
    row = await conn.execute(
        select(model_fits)
        .where(model_fits.c.outcome == "fitted")
        .order_by(model_fits.c.id.desc())
        .limit(1)
    )
    found = row.first()
    return None if found is None else dict(found._mapping)


async def latest_attempt(
    conn: AsyncConnection, trigger: str | None = None
) -> dict[str, Any] | None:
    """The newest row, fitted or refused (of one trigger, if given)."""
    query = select(model_fits).order_by(model_fits.c.id.desc()).limit(1)
    if trigger is not None:
        query = query.where(model_fits.c.trigger == trigger)
    found = (await conn.execute(query)).first()
    return None if found is None else dict(found._mapping)


async def scan_purchasers(
    conn: AsyncConnection, *, stage: str | None, after: str | None, limit: int
) -> list[CustomerState]:
    """Up to ``limit`` customers who purchased, by id after ``after`` (a bounded keyset scan
    the score filters walk page by page)."""
    query = (
        select(customers)
        .where(customers.c.converted_at.is_not(None))
        .order_by(customers.c.customer_id)
        .limit(limit)
    )
    if stage is not None:
        query = query.where(customers.c.stage == stage)
    if after is not None:
        query = query.where(customers.c.customer_id > after)
    return [state_from_row(r) for r in await conn.execute(query)]
