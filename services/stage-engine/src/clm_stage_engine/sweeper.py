"""The sweeper: time-based moves (inactivity → ``at_risk`` → ``churned``) from a given clock.

Safe with several replicas: each pass takes the candidates with ``FOR UPDATE SKIP LOCKED``, so
two sweepers never move the same customer, and a consumer batch holding a customer's row is
simply skipped this pass. Moves are computed by the same pure :func:`lifecycle.advance` the
reducer uses, recorded in the history and sent downstream like any other move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.lifecycle import CUSTOMER_STAGES, CustomerState, Stage, Transition, advance
from clm_domain.lifecycle_records import TimeRecord, encode
from clm_domain.rules import LifecycleRules
from clm_infra.replay import replay_behind
from clm_infra.schema import customers
from clm_stage_engine import repository
from clm_stage_engine.records import SCHEMA, customer_facts, move_doc

log = logging.getLogger(__name__)

SWEPT = Counter("clm_sweeper_moves_total", "Inactivity moves made by the sweeper", ["to_stage"])


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


async def sweep_once(
    engine: AsyncEngine,
    rules: LifecycleRules,
    now: datetime,
    *,
    lifecycle_topic: str,
    batch: int = 1000,
) -> int:
    """Move every customer whose inactivity crossed a threshold by ``now``; return moves."""
    at_risk_before = now - timedelta(days=rules.at_risk.inactive_days)
    churn_before = now - timedelta(days=rules.churned.inactive_days)
    total = 0
    while True:
        async with engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(customers)
                    .where(due(at_risk_before, churn_before))
                    .order_by(customers.c.customer_id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return total
            states, transitions, outbox = [], [], []
            for row in rows:
                before = repository.state_from_row(row)
                after, moves = advance(before, now, rules)
                if not moves:
                    continue
                states.append(after)
                transitions.extend(moves)
                for move in moves:
                    SWEPT.labels(move.to_stage.value).inc()
                outbox.append((after.customer_id, encode(time_record(before, after, moves))))
            await repository.upsert_customers(conn, states)
            await repository.insert_transitions(conn, transitions)
            await repository.insert_outbox(conn, lifecycle_topic, outbox)
            total += len(states)
            if len(rows) < batch:
                return total


async def sweep_forever(
    engine: AsyncEngine,
    rules: LifecycleRules,
    clock: Callable[[], datetime],
    *,
    lifecycle_topic: str,
    group_id: str,
    every_s: float,
    batch: int,
    stopping: asyncio.Event,
) -> None:
    """Sweep every ``every_s`` seconds; not while a replay of ``group_id`` is under way (a
    customer rebuilt from part of its events would look inactive and be moved for nothing)."""
    while not stopping.is_set():
        try:
            async with engine.begin() as conn:
                behind = await replay_behind(conn, group_id)
            if behind:
                log.info("sweeper waits for the replay", extra={"behind": behind})
            else:
                moved = await sweep_once(
                    engine, rules, clock(), lifecycle_topic=lifecycle_topic, batch=batch
                )
                if moved:
                    log.info("sweeper moved customers", extra={"moved": moved})
        except Exception:
            log.warning("sweep failed; retrying next round", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=every_s)


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
