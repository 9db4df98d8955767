"""One sweep batch: the customers whose inactivity (or P(alive), with the rule on) crossed a
threshold moved on, their moves recorded and published like any other, and their segments
evaluated; or the customers whose segment clock is due evaluated (the caller owns the
transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState, Transition, advance
from clm_domain.lifecycle_records import TimeRecord, encode
from clm_domain.p_alive import AliveModel
from clm_domain.rules import LifecycleRules
from clm_domain.segments.membership import Segment
from clm_stage_engine.records import SCHEMA, customer_facts, move_doc
from clm_stage_engine.repository import customers, segment_live
from clm_stage_engine.repository.outbox import insert_outbox
from clm_stage_engine.usecases.segments import Segmenting

SWEPT = Counter("clm_sweeper_moves_total", "Inactivity moves made by the sweeper", ["to_stage"])


async def sweep_batch(
    conn: AsyncConnection,
    rules: LifecycleRules,
    now: datetime,
    quiet_since: tuple[datetime, datetime],
    topic: str,
    limit: int,
    model: AliveModel | None = None,
    segmenting: Segmenting | None = None,
) -> tuple[int, int]:
    """Move up to ``limit`` of the customers quiet since ``quiet_since`` (at risk before,
    churn before), by id, skipping rows others hold. Returns (customers looked at, moved)."""
    segments = None if segmenting is None else await segmenting.segments(conn)
    rows = await customers.lock_lapsing(conn, *quiet_since, limit)
    moved = await _move(conn, rows, rules, now, topic, model)
    await _segments_of(conn, segmenting, segments, moved, now)
    return len(rows), len(moved)


async def sweep_predicted(
    conn: AsyncConnection,
    rules: LifecycleRules,
    model: AliveModel,
    now: datetime,
    topic: str,
    *,
    after: str,
    limit: int,
    segmenting: Segmenting | None = None,
) -> tuple[int, int, str]:
    """Move up to ``limit`` of the customers whose P(alive) under ``model`` is below
    ``at_risk.p_alive_below`` by ``now``, by id after ``after``, skipping rows others hold.
    Returns (customers looked at, moved, the last id looked at)."""
    threshold = rules.at_risk.p_alive_below
    if threshold is None:
        return 0, 0, after
    today = now.astimezone(UTC).date()
    segments = None if segmenting is None else await segmenting.segments(conn)
    rows = await customers.lock_below_p_alive(
        conn, model, threshold, today, after=after, limit=limit
    )
    last = rows[-1].customer_id if rows else after
    moved = await _move(conn, rows, rules, now, topic, model)
    await _segments_of(conn, segmenting, segments, moved, now)
    return len(rows), len(moved), last


async def sweep_segments(
    conn: AsyncConnection, segmenting: Segmenting, now: datetime, limit: int
) -> tuple[int, int]:
    """Evaluate up to ``limit`` of the customers whose segment clock is due by ``now``, each
    from its due instant on (a change is recorded when it happened). Returns (customers
    due, customers evaluated)."""
    segments = await segmenting.segments(conn)
    seen, due = await segment_live.lock_due(conn, now, limit)
    await segmenting.written(
        conn,
        segments,
        {state.customer_id: state for state, _ in due},
        "sweep",
        now,
        since={state.customer_id: at for state, at in due},
    )
    return seen, len(due)


async def _segments_of(
    conn: AsyncConnection,
    segmenting: Segmenting | None,
    segments: Sequence[Segment] | None,
    moved: Sequence[Moved],
    now: datetime,
) -> None:
    """The segments of the customers moved, walked through the states their moves made
    (from their segment clock, if due before the first move) to ``now``."""
    if segmenting is None or segments is None or not moved:
        return
    await segmenting.written(
        conn,
        segments,
        {m.after.customer_id: m.after for m in moved},
        "sweep",
        now,
        moves={m.after.customer_id: (m.before, m.states()) for m in moved},
    )


@dataclass(frozen=True, slots=True)
class Moved:
    """A customer the sweep moved: its state before and after, and its moves."""

    before: CustomerState
    after: CustomerState
    moves: Sequence[Transition]

    def states(self) -> list[tuple[datetime, CustomerState]]:
        """Each move's instant and the state it made (a move changes the stage alone)."""
        return [
            (m.at, replace(self.before, stage=m.to_stage, stage_entered_at=m.at))
            for m in self.moves[:-1]
        ] + [(self.moves[-1].at, self.after)]


async def _move(
    conn: AsyncConnection,
    rows: Sequence[CustomerState],
    rules: LifecycleRules,
    now: datetime,
    topic: str,
    model: AliveModel | None,
) -> list[Moved]:
    """Apply the time-based moves due by ``now`` to ``rows``; return the customers moved."""
    moved, transitions, outbox = [], [], []
    for before in rows:
        after, moves = advance(before, now, rules, model)
        if not moves:
            continue
        moved.append(Moved(before, after, moves))
        transitions.extend(moves)
        for move in moves:
            SWEPT.labels(move.to_stage.value).inc()
        outbox.append((after.customer_id, encode(time_record(before, after, moves))))
    if moved:
        await customers.upsert_customers(conn, [m.after for m in moved])
        await customers.insert_transitions(conn, transitions)
        await insert_outbox(conn, topic, outbox)
    return moved


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
