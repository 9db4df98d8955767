"""Customers' rows and their stage history: reads, locks, upserts, merges, the sweep's pick."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_domain.lifecycle import CUSTOMER_STAGES, CustomerState, Stage, Transition
from clm_domain.p_alive import AliveModel, threshold_log_odds
from clm_infra.db import driver, driver_insert, lone_statement
from clm_infra.schema import customer_events, customers, identity_links, stage_transitions
from clm_stage_engine.known import Stored
from clm_stage_engine.repository.rows import (
    STATE_COLUMNS,
    TRANSITION_COLUMNS,
    customer_rows,
    state_from_row,
    state_from_values,
    transition_values,
)

_READ = (
    f"SELECT {', '.join(STATE_COLUMNS)}, CAST(CAST(xmin AS text) AS bigint) FROM customers"
    " WHERE customer_id = ANY($1::text[]) ORDER BY customer_id"
)
_ID = STATE_COLUMNS.index("customer_id")


async def read_customers(
    conn: AsyncConnection, ids: Iterable[str], *, lock: bool = False
) -> dict[str, Stored]:
    """The customers' rows and their versions (``xmin``), in a stable order; with ``lock``,
    locked (``FOR UPDATE``) until the transaction ends.

    On the driver: its rows come as the driver decodes them (arrays are lists already),
    without SQLAlchemy's per-row type processing."""
    wanted = sorted(ids)
    if not wanted:
        return {}
    rows = await (await driver(conn)).fetch(_READ + (" FOR UPDATE" if lock else ""), wanted)
    out = {}
    for r in rows:
        values = list(r)
        version = values.pop()
        out[r[_ID]] = Stored(state_from_values(values), version)
    return out


async def lock_customers(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, CustomerState]:
    """Load and lock the customers' rows, in a stable order (no deadlocks)."""
    return {k: s.state for k, s in (await read_customers(conn, ids, lock=True)).items()}


_UPSERT_TAIL = "ON CONFLICT (customer_id) DO UPDATE SET updated_at = now(), " + ", ".join(
    f"{name} = excluded.{name}" for name in STATE_COLUMNS if name != "customer_id"
)


async def upsert_customers(conn: AsyncConnection, states: Sequence[CustomerState]) -> None:
    """One statement for the whole batch, rows in a stable order."""
    if not states:
        return
    await driver_insert(
        await driver(conn),
        customers,
        STATE_COLUMNS,
        customer_rows(states),
        tail=_UPSERT_TAIL,
        via_json=True,
    )


async def insert_transitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> None:
    if not transitions:
        return
    await driver_insert(
        await driver(conn),
        stage_transitions,
        TRANSITION_COLUMNS,
        [transition_values(t) for t in transitions],
        via_json=True,
    )


_ONE = f"SELECT {', '.join(STATE_COLUMNS)} FROM customers WHERE customer_id = $1"


async def read_customer(engine: AsyncEngine, customer_id: str) -> CustomerState | None:
    """The hot read: one statement on the driver (:func:`clm_infra.db.lone_statement`)."""
    async with lone_statement(engine) as drv:
        row = await drv.fetchrow(_ONE, customer_id)
    return None if row is None else state_from_values(row)


async def get_customer(conn: AsyncConnection, customer_id: str) -> CustomerState | None:
    """The customer in ``conn``'s transaction (:func:`read_customer` outside one)."""
    row = await (await driver(conn)).fetchrow(_ONE, customer_id)
    return None if row is None else state_from_values(row)


async def get_history(conn: AsyncConnection, customer_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(
            stage_transitions.c.from_stage,
            stage_transitions.c.to_stage,
            stage_transitions.c.at,
            stage_transitions.c.event_id,
            stage_transitions.c.reason,
        )
        .where(stage_transitions.c.customer_id == customer_id)
        .order_by(stage_transitions.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


async def list_customers(
    conn: AsyncConnection, *, stage: str | None, after: str | None, limit: int
) -> list[CustomerState]:
    """A page of customers by id (keyset: stable while rows are written)."""
    query = select(customers).order_by(customers.c.customer_id).limit(limit)
    if stage is not None:
        query = query.where(customers.c.stage == stage)
    if after is not None:
        query = query.where(customers.c.customer_id > after)
    return [state_from_row(r) for r in await conn.execute(query)]


async def count_by_stage(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(customers.c.stage, func.count()).group_by(customers.c.stage))
    return {stage: int(n) for stage, n in rows}


async def insert_links(conn: AsyncConnection, links: Sequence[tuple[str, str, str]]) -> None:
    """(anonymous id, customer id, event id) links; an id already linked keeps its link."""
    if not links:
        return
    await conn.execute(
        insert(identity_links)
        .values([{"anonymous_id": a, "customer_id": c, "event_id": e} for a, c, e in links])
        .on_conflict_do_nothing()
    )


async def absorb_profiles(conn: AsyncConnection, into: str, profiles: Sequence[str]) -> None:
    """Move profiles' events and history onto a customer and drop their rows; ids linked to
    a profile (a merged-away customer's anonymous ids) now link to the customer."""
    if not profiles:
        return
    await conn.execute(
        update(identity_links)
        .where(identity_links.c.customer_id.in_(profiles))
        .values(customer_id=into)
    )
    await conn.execute(
        update(customer_events)
        .where(customer_events.c.customer_id.in_(profiles))
        .values(customer_id=into)
    )
    await conn.execute(
        update(stage_transitions)
        .where(stage_transitions.c.customer_id.in_(profiles))
        .values(customer_id=into)
    )
    await conn.execute(delete(customers).where(customers.c.customer_id.in_(profiles)))


def due(at_risk_before: datetime, churn_before: datetime) -> ColumnElement[bool]:
    """The customers inactivity moves on: quiet since ``at_risk_before`` (customers) or
    ``churn_before`` (at risk). It names the stages, so Postgres reads the partial index of
    the lapsing stages (``ix_customers_lapsing``) for it."""
    return or_(
        and_(
            customers.c.stage.in_([s.value for s in CUSTOMER_STAGES]),
            customers.c.last_seen_at <= at_risk_before,
        ),
        and_(
            customers.c.stage == Stage.AT_RISK.value,
            customers.c.last_seen_at <= churn_before,
        ),
    )


async def lock_lapsing(
    conn: AsyncConnection, at_risk_before: datetime, churn_before: datetime, limit: int
) -> list[CustomerState]:
    """Up to ``limit`` customers :func:`due` to move, by id, locked; rows another
    transaction holds (a batch writing them, another sweeper) are skipped."""
    rows = await conn.execute(
        select(customers)
        .where(due(at_risk_before, churn_before))
        .order_by(customers.c.customer_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [state_from_row(row) for row in rows.all()]


#: P(alive) below the threshold today, and not already on the last purchase day: the log-odds
#: of inactivity (``clm_domain.p_alive.log_odds_inactive``, the same expression in the same
#: order) against log(1/θ - 1). Logarithms of positive finite numbers only: no overflow.
_X = "(purchase_days - 1)::float8"
_SPAN = "((last_purchase_at AT TIME ZONE 'UTC')::date - (converted_at AT TIME ZONE 'UTC')::date)"
_AGE = f"GREATEST(CAST(:today AS date) - (converted_at AT TIME ZONE 'UTC')::date, {_SPAN})"
_BASE = f"ln(CAST(:a AS float8)) - ln(CAST(:b AS float8) + {_X} - 1.0::float8)"
_BELOW_P_ALIVE = text(
    f"{_BASE} <= CAST(:limit AS float8)"
    f" AND {_BASE} + (CAST(:r AS float8) + {_X}) * ("
    f"ln(CAST(:alpha AS float8) + {_AGE}::float8 / 7.0::float8)"
    f" - ln(CAST(:alpha AS float8) + {_SPAN}::float8 / 7.0::float8)"
    ") > CAST(:limit AS float8)"
).bindparams(*(bindparam(name, type_=Float) for name in ("a", "b", "r", "alpha", "limit")))


async def lock_below_p_alive(
    conn: AsyncConnection,
    model: AliveModel,
    threshold: float,
    today: date,
    *,
    after: str,
    limit: int,
) -> list[CustomerState]:
    """Up to ``limit`` customers in a customer stage, with repeat purchase days, whose
    P(alive) is below ``threshold`` on ``today`` (a UTC day) under ``model``, by id after
    ``after``, locked; rows another transaction holds are skipped. A keyset page of a scan
    of the customer stages: its cost is one pass over them per sweep."""
    below = _BELOW_P_ALIVE.bindparams(
        a=model.a,
        b=model.b,
        r=model.r,
        alpha=model.alpha,
        limit=threshold_log_odds(threshold),
        today=today,
    )
    rows = await conn.execute(
        select(customers)
        .where(
            customers.c.stage.in_([s.value for s in CUSTOMER_STAGES]),
            customers.c.purchase_days >= 2,
            customers.c.converted_at.is_not(None),
            customers.c.last_purchase_at.is_not(None),
            customers.c.customer_id > after,
            below,
        )
        .order_by(customers.c.customer_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [state_from_row(row) for row in rows.all()]
