"""A segment's backfill as stored: the pending one to work on (its row locked), a page of
customers to evaluate, and its progress."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState
from clm_infra.schema import customers
from clm_infra.segment_schema import segments
from clm_stage_engine.repository.rows import state_from_row


@dataclass(frozen=True, slots=True)
class Backfill:
    """A pending backfill: the segment, the version it evaluates, where it stands."""

    segment_id: int
    version: int
    after: str | None
    done: int
    total: int | None
    announce: bool


async def lock_pending(conn: AsyncConnection) -> Backfill | None:
    """The oldest segment whose backfill is not finished, its row locked (a definition change
    waits for the step; another replica's backfill takes the next one)."""
    row = (
        await conn.execute(
            select(
                segments.c.id,
                segments.c.backfill_version,
                segments.c.backfill_after,
                segments.c.backfill_done,
                segments.c.backfill_total,
                segments.c.announce_backfill,
            )
            .where(
                segments.c.deleted_at.is_(None),
                segments.c.backfill_version.is_not(None),
                segments.c.backfill_finished_at.is_(None),
            )
            .order_by(segments.c.updated_at, segments.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
    ).first()
    if row is None:
        return None
    return Backfill(int(row[0]), int(row[1]), row[2], int(row[3]), row[4], bool(row[5]))


async def count_customers(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(customers))).scalar_one())


async def page(conn: AsyncConnection, after: str | None, limit: int) -> list[CustomerState]:
    """Up to ``limit`` customers by id after ``after``, their rows locked shared until the
    step commits; rows a writer holds are skipped (that writer evaluates them itself)."""
    query = select(customers).order_by(customers.c.customer_id).limit(limit)
    if after is not None:
        query = query.where(customers.c.customer_id > after)
    rows = await conn.execute(query.with_for_update(read=True, skip_locked=True))
    return [state_from_row(r) for r in rows.all()]


async def save_progress(
    conn: AsyncConnection,
    job: Backfill,
    *,
    after: str | None,
    done: int,
    total: int,
    now: datetime,
    finished: bool,
) -> None:
    values: dict[str, object] = {"backfill_after": after, "backfill_done": done}
    values["backfill_total"] = total
    if job.total is None:
        values["backfill_started_at"] = now
    if finished:
        values["backfill_finished_at"] = now
    await conn.execute(update(segments).where(segments.c.id == job.segment_id).values(**values))
