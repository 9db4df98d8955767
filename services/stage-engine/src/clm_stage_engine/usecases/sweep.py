"""One sweep batch: the customers whose inactivity (or P(alive), with the rule on) crossed a
threshold moved on, their moves recorded and published like any other (the caller owns the
transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState, Transition, advance
from clm_domain.lifecycle_records import TimeRecord, encode
from clm_domain.p_alive import AliveModel
from clm_domain.rules import LifecycleRules
from clm_stage_engine.records import SCHEMA, customer_facts, move_doc
from clm_stage_engine.repository import customers
from clm_stage_engine.repository.outbox import insert_outbox

SWEPT = Counter("clm_sweeper_moves_total", "Inactivity moves made by the sweeper", ["to_stage"])


async def sweep_batch(
    conn: AsyncConnection,
    rules: LifecycleRules,
    now: datetime,
    quiet_since: tuple[datetime, datetime],
    topic: str,
    limit: int,
    model: AliveModel | None = None,
) -> tuple[int, int]:
    """Move up to ``limit`` of the customers quiet since ``quiet_since`` (at risk before,
    churn before), by id, skipping rows others hold. Returns (customers looked at, moved)."""
    rows = await customers.lock_lapsing(conn, *quiet_since, limit)
    return len(rows), await _move(conn, rows, rules, now, topic, model)


async def sweep_predicted(
    conn: AsyncConnection,
    rules: LifecycleRules,
    model: AliveModel,
    now: datetime,
    topic: str,
    *,
    after: str,
    limit: int,
) -> tuple[int, int, str]:
    """Move up to ``limit`` of the customers whose P(alive) under ``model`` is below
    ``at_risk.p_alive_below`` by ``now``, by id after ``after``, skipping rows others hold.
    Returns (customers looked at, moved, the last id looked at)."""
    threshold = rules.at_risk.p_alive_below
    if threshold is None:
        return 0, 0, after
    today = now.astimezone(UTC).date()
    rows = await customers.lock_below_p_alive(
        conn, model, threshold, today, after=after, limit=limit
    )
    last = rows[-1].customer_id if rows else after
    return len(rows), await _move(conn, rows, rules, now, topic, model), last


async def _move(
    conn: AsyncConnection,
    rows: Sequence[CustomerState],
    rules: LifecycleRules,
    now: datetime,
    topic: str,
    model: AliveModel | None,
) -> int:
    """Apply the time-based moves due by ``now`` to ``rows``; return how many moved."""
    states, transitions, outbox = [], [], []
    for before in rows:
        after, moves = advance(before, now, rules, model)
        if not moves:
            continue
        states.append(after)
        transitions.extend(moves)
        for move in moves:
            SWEPT.labels(move.to_stage.value).inc()
        outbox.append((after.customer_id, encode(time_record(before, after, moves))))
    if states:
        await customers.upsert_customers(conn, states)
        await customers.insert_transitions(conn, transitions)
        await insert_outbox(conn, topic, outbox)
    return len(states)


def time_record(
    before: CustomerState, after: CustomerState, moves: Sequence[Transition]
) -> TimeRecord:
    """The ``time`` record of a customer's inactivity moves (``before`` → ``after``)."""
    return {
        "schema": SCHEMA,
        "kind": "time",
        "record_id": f"time:{after.customer_id}:{moves[-1].at.isoformat()}",
        "customer_id": after.customer_id,
        "event": None,
        "customer": customer_facts(after),
        "stage_before": before.stage.value,
        "stage_before_entered_at": before.stage_entered_at,
        "stage_after": after.stage.value,
        "transition": move_doc(moves[-1]),
        "transitions": [move_doc(m) for m in moves],
        "first_purchase": False,
        "repeat_purchase": False,
        "reactivation": False,
    }
