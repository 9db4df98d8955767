"""The predictive KPIs' reads: the current model version and purchasing customers' facts,
through the prediction read model (the views ``model_current`` and
``customer_purchase_facts``, ``docs/read-model.md``), never the stage engine's tables.

Customers with the same first and last purchase day and the same number of purchase days have
the same summary on a given day, so the facts come back grouped by those three, with how many
customers share them and the mean of their repeat spend: the KPIs are sums and means over
customers, and a customer's predicted CLV is linear in its repeat spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_metrics.predicted import FactGroups

_MODEL = text("SELECT version, fitted_at, bgnbd, gamma_gamma FROM model_current")

_DAY = "- DATE '1970-01-01'"  # a date as a day number (days since 1970-01-01)

#: Every purchasing customer, grouped.
_BASE = (
    f"SELECT first_purchase_day {_DAY} AS first_day, last_purchase_day {_DAY} AS last_day,"
    " purchase_days, count(*) AS customers, avg(repeat_spend::float8) AS repeat_spend"
    " FROM customer_purchase_facts GROUP BY 1, 2, 3"
)

#: The customers behind metrics customer numbers, of one purchase currency, grouped.
_NUMBERED = (
    f"SELECT f.first_purchase_day {_DAY} AS first_day, f.last_purchase_day {_DAY} AS last_day,"
    " f.purchase_days, count(*) AS customers, avg(f.repeat_spend::float8) AS repeat_spend"
    " FROM unnest(CAST(:numbers AS integer[])) AS wanted(number)"
    " JOIN metrics_customer_numbers AS n ON n.number = wanted.number"
    " JOIN customer_purchase_facts AS f ON f.customer_id = n.customer_id"
    " WHERE f.purchase_currency = :currency"
    " GROUP BY 1, 2, 3"
)


def _as_arrays(grouped: str) -> Any:
    """The groups as one row of five arrays: far fewer objects to decode than a row a group."""
    return text(
        "SELECT array_agg(first_day), array_agg(last_day), array_agg(purchase_days),"
        f" array_agg(customers), array_agg(repeat_spend) FROM ({grouped}) AS grouped"
    )


_BASE_ARRAYS = _as_arrays(_BASE)
_NUMBERED_ARRAYS = _as_arrays(_NUMBERED)


async def current_model(conn: AsyncConnection) -> dict[str, Any] | None:
    """The model version the scores use (None: none was fitted yet)."""
    row = (await conn.execute(_MODEL)).first()
    return None if row is None else dict(row._mapping)


async def current_version(conn: AsyncConnection) -> int | None:
    """The current model version (None: none was fitted yet)."""
    version = await conn.scalar(text("SELECT version FROM model_current"))
    return None if version is None else int(version)


def _groups(row: Any) -> FactGroups:
    first, last, days, customers, spend = (v or [] for v in row)
    return FactGroups(
        first_day=np.asarray(first, dtype=np.int64),
        last_day=np.asarray(last, dtype=np.int64),
        purchase_days=np.asarray(days, dtype=np.int64),
        customers=np.asarray(customers, dtype=np.int64),
        repeat_spend=np.asarray(spend, dtype=np.float64),
    )


async def base_facts(conn: AsyncConnection) -> FactGroups:
    """Every customer who ever purchased (the customer base), grouped."""
    return _groups((await conn.execute(_BASE_ARRAYS)).one())


async def numbered_facts(
    conn: AsyncConnection, numbers: Sequence[int], currency: str
) -> FactGroups:
    """The customers numbered ``numbers`` (``metrics_customer_numbers``) who purchased, all
    in ``currency`` (a customer whose purchases came in several is left out), grouped."""
    if not numbers:
        return _groups((None,) * 5)
    params = {"numbers": list(numbers), "currency": currency}
    return _groups((await conn.execute(_NUMBERED_ARRAYS, params)).one())
