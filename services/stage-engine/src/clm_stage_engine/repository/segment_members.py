"""Reading segment memberships for the API: a segment's members (keyset pages), its history
(entries, exits and size over time, from the spans), and a customer with its segments and
its consent.

A customer is a member at instant ``t`` when one of its spans has
``entered_at <= t < left_at`` (or no ``left_at``). The history counts an entry or an exit in
the bucket ``(start, end]`` its instant falls in, so the size at a bucket's end is the size
at its start plus its entries minus its exits, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, exists, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_domain.consent import MARKETING, ConsentGiven
from clm_domain.lifecycle import CustomerState
from clm_infra.consent_schema import customer_consent
from clm_infra.db import lone_statement
from clm_infra.segment_schema import segment_memberships as spans
from clm_stage_engine.repository.rows import STATE_COLUMNS, state_from_values

Bucket = Literal["hour", "day"]
#: A bucket's length, in absolute hours (an interval of days would follow the session's zone).
STEPS: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(hours=24)}


@dataclass(frozen=True, slots=True)
class Membership:
    """One of a customer's segments: which, its name, and since when it is a member."""

    segment_id: int
    name: str
    entered_at: datetime


#: A member whose latest marketing consent is withdrawn.
_WITHDRAWN = exists().where(
    customer_consent.c.customer_id == spans.c.customer_id,
    customer_consent.c.purpose == MARKETING,
    customer_consent.c.granted.is_(False),
)


async def members_page(
    conn: AsyncConnection,
    segment_id: int,
    after: str | None,
    limit: int,
    *,
    marketing: bool = False,
) -> list[dict[str, Any]]:
    """Up to ``limit`` members (``customer_id``, ``entered_at``, ``version``) by customer id,
    after ``after``: a keyset walk of the open spans' unique index, so a page never skips or
    repeats a member that stays while others enter and leave. ``marketing``: without the
    members who withdrew marketing consent."""
    query = (
        select(spans.c.customer_id, spans.c.entered_at, spans.c.version)
        .where(spans.c.segment_id == segment_id, spans.c.left_at.is_(None))
        .order_by(spans.c.customer_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(spans.c.customer_id > after)
    if marketing:
        query = query.where(~_WITHDRAWN)
    return [dict(r._mapping) for r in await conn.execute(query)]


async def withdrawn_members(conn: AsyncConnection, segment_id: int) -> int:
    """How many of the segment's members now withdrew marketing consent."""
    found = await conn.execute(
        select(func.count())
        .select_from(spans)
        .where(spans.c.segment_id == segment_id, spans.c.left_at.is_(None), _WITHDRAWN)
    )
    return int(found.scalar_one())


async def size_at(conn: AsyncConnection, segment_id: int, at: datetime | None = None) -> int:
    """How many members the segment had at ``at`` (now: its open spans)."""
    where = [spans.c.segment_id == segment_id]
    if at is None:
        where.append(spans.c.left_at.is_(None))
    else:
        where += [spans.c.entered_at <= at, or_(spans.c.left_at.is_(None), spans.c.left_at > at)]
    found = await conn.execute(select(func.count()).select_from(spans).where(and_(*where)))
    return int(found.scalar_one())


#: Each bucket of ``(from, to]`` (aligned on whole UTC hours or days, the first and last cut
#: at from and to) with the entries and exits in it; each count a range scan of an index.
_BUCKETS = text(
    """
    WITH steps AS (
        SELECT greatest(g, CAST(:start AS timestamptz)) AS b_start,
               least(g + CAST(:step AS interval), CAST(:end AS timestamptz)) AS b_end
        FROM generate_series(
            date_trunc(:unit, CAST(:start AS timestamptz), 'UTC'),
            CAST(:end AS timestamptz) - interval '1 microsecond',
            CAST(:step AS interval)
        ) AS g
    )
    SELECT b_start, b_end,
        (SELECT count(*) FROM segment_memberships m WHERE m.segment_id = :segment
           AND m.entered_at > b_start AND m.entered_at <= b_end) AS entries,
        (SELECT count(*) FROM segment_memberships m WHERE m.segment_id = :segment
           AND m.left_at > b_start AND m.left_at <= b_end) AS exits
    FROM steps ORDER BY b_start
    """
)


async def history(
    conn: AsyncConnection, segment_id: int, start: datetime, end: datetime, bucket: Bucket
) -> dict[str, Any]:
    """The segment's size at ``start`` and ``end``, its entries and exits in between, and
    the same by bucket (``start``, ``end``, ``entries``, ``exits``, ``size`` at its end)."""
    size_from = await size_at(conn, segment_id, start)
    rows = await conn.execute(
        _BUCKETS,
        {
            "segment": segment_id,
            "start": start,
            "end": end,
            "unit": bucket,
            "step": STEPS[bucket],
        },
    )
    buckets, size = [], size_from
    for b_start, b_end, entries, exits in rows:
        size += entries - exits
        buckets.append(
            {"start": b_start, "end": b_end, "entries": entries, "exits": exits, "size": size}
        )
    return {
        "size_at_from": size_from,
        "size_at_to": size,
        "entries": sum(b["entries"] for b in buckets),
        "exits": sum(b["exits"] for b in buckets),
        "buckets": buckets,
    }


#: The customer's row, its segments (ids, names, since when) and its consent (purposes,
#: granted, when) in one statement.
_WITH_SEGMENTS = (
    f"SELECT {', '.join('c.' + c for c in STATE_COLUMNS)}, seg.ids, seg.names, seg.entered,"
    " con.purposes, con.granted, con.ats"
    " FROM customers c LEFT JOIN LATERAL ("
    " SELECT array_agg(s.id ORDER BY s.id) AS ids, array_agg(s.name ORDER BY s.id) AS names,"
    " array_agg(m.entered_at ORDER BY s.id) AS entered"
    " FROM segment_memberships m JOIN segments s ON s.id = m.segment_id"
    " WHERE m.customer_id = c.customer_id AND m.left_at IS NULL AND s.deleted_at IS NULL"
    ") AS seg ON true LEFT JOIN LATERAL ("
    " SELECT array_agg(k.purpose) AS purposes, array_agg(k.granted) AS granted,"
    " array_agg(k.at) AS ats FROM customer_consent k WHERE k.customer_id = c.customer_id"
    ") AS con ON true WHERE c.customer_id = $1"
)


async def read_customer_with_segments(
    engine: AsyncEngine, customer_id: str
) -> tuple[CustomerState, list[Membership], dict[str, ConsentGiven]] | None:
    """The customer, the segments it is a member of (by segment id) and its consent by
    purpose, or None: one statement, one round trip (:func:`clm_infra.db.lone_statement`)."""
    async with lone_statement(engine) as drv:
        row = await drv.fetchrow(_WITH_SEGMENTS, customer_id)
    if row is None:
        return None
    values = list(row)
    ids, names, entered, purposes, granted, ats = values[-6:]
    state = state_from_values(values[:-6])
    memberships = [
        Membership(int(i), n, e)
        for i, n, e in zip(ids or (), names or (), entered or (), strict=True)
    ]
    consent = {
        p: ConsentGiven(g, at)
        for p, g, at in zip(purposes or (), granted or (), ats or (), strict=True)
    }
    return state, memberships, consent
