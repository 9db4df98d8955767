"""All SQL of the stage engine. Repositories never commit: the batch or request does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.kpis import exact_money
from clm_common.lifecycle import CustomerState, Stage, Transition
from clm_common.schema import customers, outbox, processed_events, stage_transitions

_STATE_COLUMNS = [
    "customer_id",
    "stage",
    "stage_entered_at",
    "first_seen_at",
    "last_seen_at",
    "first_source",
    "first_channel",
    "acquired_at",
    "converted_at",
    "last_purchase_at",
    "purchases",
    "revenue",
    "refunds",
    "refunded",
    "tickets_opened",
    "tickets_solved",
    "reviews",
    "review_sum",
    "last_nps",
    "referrals",
    "events",
]


def state_from_row(row: Any) -> CustomerState:
    values = {name: getattr(row, name) for name in _STATE_COLUMNS}
    values["stage"] = Stage(values["stage"])
    return CustomerState(**values)


def row_from_state(state: CustomerState) -> dict[str, Any]:
    row = {name: getattr(state, name) for name in _STATE_COLUMNS}
    row["stage"] = state.stage.value
    return row


async def claim_events(
    conn: AsyncConnection, events: Sequence[tuple[str, str, str | None]]
) -> set[tuple[str, str]]:
    """Record (source, event_id) as processed; return those not processed before."""
    if not events:
        return set()
    result = await conn.execute(
        insert(processed_events)
        .values([{"source": s, "event_id": e, "customer_id": c} for s, e, c in events])
        .on_conflict_do_nothing()
        .returning(processed_events.c.source, processed_events.c.event_id)
    )
    return {(r.source, r.event_id) for r in result}


async def lock_customers(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, CustomerState]:
    """Load and lock the customers' rows, in a stable order (no deadlocks between replicas)."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(customers)
        .where(customers.c.customer_id.in_(sorted(ids)))
        .order_by(customers.c.customer_id)
        .with_for_update()
    )
    return {r.customer_id: state_from_row(r) for r in rows}


async def upsert_customers(conn: AsyncConnection, states: Sequence[CustomerState]) -> None:
    """One statement for the whole batch."""
    if not states:
        return
    stmt = insert(customers).values(
        [row_from_state(s) for s in sorted(states, key=lambda s: s.customer_id)]
    )
    updates: dict[str, Any] = {
        name: stmt.excluded[name] for name in _STATE_COLUMNS if name != "customer_id"
    }
    updates["updated_at"] = func.now()
    await conn.execute(stmt.on_conflict_do_update(index_elements=["customer_id"], set_=updates))


async def insert_transitions(conn: AsyncConnection, transitions: Sequence[Transition]) -> None:
    if not transitions:
        return
    await conn.execute(
        insert(stage_transitions).values(
            [
                {
                    "customer_id": t.customer_id,
                    "from_stage": t.from_stage.value if t.from_stage else None,
                    "to_stage": t.to_stage.value,
                    "at": t.at,
                    "event_id": t.event_id,
                    "reason": t.reason,
                }
                for t in transitions
            ]
        )
    )


async def insert_outbox(
    conn: AsyncConnection, topic: str, rows: Sequence[tuple[str, bytes]]
) -> None:
    if not rows:
        return
    await conn.execute(
        insert(outbox).values([{"topic": topic, "key": k, "payload": p} for k, p in rows])
    )


async def get_customer(conn: AsyncConnection, customer_id: str) -> CustomerState | None:
    row = (
        await conn.execute(select(customers).where(customers.c.customer_id == customer_id))
    ).first()
    return None if row is None else state_from_row(row)


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


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return exact_money(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
