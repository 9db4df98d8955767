"""The segment KPIs' reads, through the segments' read model (the views ``segment_names`` and
``segment_spans``, ``docs/read-model.md``), never the stage engine's tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_metrics.segment_kpis import SegmentInfo, SegmentTotals, WindowCounts

_BY_ID = text("SELECT segment_id, name, deleted_at FROM segment_names WHERE segment_id = :id")

#: A name is unique among the segments not deleted; a deleted one is found by its id only.
_BY_NAME = text(
    "SELECT segment_id, name, deleted_at FROM segment_names"
    " WHERE name = :name AND deleted_at IS NULL"
)

_WINDOW = text(
    "SELECT"
    " count(*) FILTER (WHERE entered_at <= :end AND (left_at IS NULL OR left_at > :end)),"
    " count(*) FILTER (WHERE entered_at >= :start AND entered_at < :end),"
    " count(*) FILTER (WHERE left_at >= :start AND left_at < :end)"
    " FROM segment_spans WHERE segment_id = :id"
)

#: The ``bound`` oldest segments not deleted with their members and every span entered and
#: left so far (the spans of the others are not read), and how many are not deleted.
_TOTALS = text(
    "WITH live AS (SELECT segment_id, name FROM segment_names WHERE deleted_at IS NULL),"
    " kept AS (SELECT segment_id, name FROM live ORDER BY segment_id LIMIT :bound)"
    " SELECT k.segment_id, k.name, (SELECT count(*) FROM live) AS live,"
    " count(s.segment_id) FILTER (WHERE s.left_at IS NULL) AS members,"
    " count(s.segment_id) AS entries, count(s.left_at) AS exits"
    " FROM kept AS k LEFT JOIN segment_spans AS s ON s.segment_id = k.segment_id"
    " GROUP BY k.segment_id, k.name ORDER BY k.segment_id"
)


async def by_id(conn: AsyncConnection, segment_id: int) -> SegmentInfo | None:
    """The segment with this id, deleted or not."""
    row = (await conn.execute(_BY_ID, {"id": segment_id})).first()
    return None if row is None else SegmentInfo(int(row[0]), row[1], row[2])


async def by_name(conn: AsyncConnection, name: str) -> SegmentInfo | None:
    """The segment not deleted with this name."""
    row = (await conn.execute(_BY_NAME, {"name": name})).first()
    return None if row is None else SegmentInfo(int(row[0]), row[1], row[2])


async def window_counts(
    conn: AsyncConnection, segment_id: int, start: datetime, end: datetime
) -> WindowCounts:
    """The segment's size at ``end`` and its entries and exits in ``[start, end)``."""
    params = {"id": segment_id, "start": start, "end": end}
    size, entries, exits = (await conn.execute(_WINDOW, params)).one()
    return WindowCounts(int(size), int(entries), int(exits))


async def totals(conn: AsyncConnection, bound: int) -> tuple[list[SegmentTotals], int]:
    """The figures of the ``bound`` oldest segments not deleted, and how many are not
    deleted."""
    rows = (await conn.execute(_TOTALS, {"bound": bound})).all()
    kept = [SegmentTotals(int(r[0]), r[1], int(r[3]), int(r[4]), int(r[5])) for r in rows]
    return kept, int(rows[0][2]) if rows else 0
