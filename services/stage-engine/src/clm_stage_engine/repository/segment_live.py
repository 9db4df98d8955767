"""Segment memberships as the writers of customer rows keep them: the catalog's version (and
its lock), the active definitions, each customer's open spans, the spans opened and closed,
the customers' segment clocks, and the customers whose clock is due."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle import CustomerState
from clm_infra.consumer import Conflict
from clm_infra.db import driver
from clm_infra.schema import customers
from clm_infra.segment_schema import CATALOG_LOCK
from clm_stage_engine.repository.rows import state_from_row


@dataclass(frozen=True, slots=True)
class Definition:
    """An active segment's definition as stored."""

    id: int
    version: int
    name: str
    condition: Any


@dataclass(frozen=True, slots=True)
class Span:
    """A change of one customer's membership in one segment: an entry (``entered_at`` is
    ``at``) or an exit (``entered_at``: when the span it closes began)."""

    segment_id: int
    customer_id: str
    at: datetime
    entered_at: datetime
    cause: str  # what ``entered_by`` / ``left_by`` say: event:<source>:<id>, sweep, …


class MembershipsChanged(Conflict):
    """A concurrent writer opened or closed one of the spans this write meant to: the batch
    retries, reading them again."""


async def catalog_version(conn: AsyncConnection) -> int:
    """The definitions' version, the catalog's lock held shared until the transaction ends
    (:data:`clm_infra.segment_schema.CATALOG_LOCK`)."""
    version = await (await driver(conn)).fetchval("SELECT clm_segment_catalog()")
    return int(version)


_DEFINITIONS = (
    "SELECT id, version, name, condition::text FROM segments WHERE deleted_at IS NULL ORDER BY id"
)


async def active_definitions(conn: AsyncConnection) -> tuple[list[Definition], bool]:
    """The active definitions, and whether memberships are paused (a replay runs)."""
    drv = await driver(conn)
    rows = await drv.fetch(_DEFINITIONS)
    paused = bool(await drv.fetchval("SELECT paused FROM segment_catalog WHERE id = 1"))
    return [Definition(int(i), int(v), n, orjson.loads(c)) for i, v, n, c in rows], paused


async def resume(conn: AsyncConnection) -> None:
    """End a replay's pause: the catalog's lock taken exclusive (every writer after this
    evaluates memberships again), the version bumped."""
    drv = await driver(conn)
    await drv.execute("SELECT pg_advisory_xact_lock($1)", CATALOG_LOCK)
    await drv.execute(
        "UPDATE segment_catalog SET paused = false, version = version + 1 WHERE id = 1"
    )


_ORPHANS = (
    "SELECT m.customer_id FROM segment_memberships AS m WHERE m.segment_id = $1"
    " AND m.left_at IS NULL AND NOT EXISTS"
    " (SELECT 1 FROM customers AS c WHERE c.customer_id = m.customer_id) ORDER BY 1"
)


async def orphans(conn: AsyncConnection, segment_id: int) -> list[str]:
    """Members of the segment without a customer row (gone during a replay)."""
    return [r[0] for r in await (await driver(conn)).fetch(_ORPHANS, segment_id)]


# the open spans (segment id ≥ 1), then the clocks (segment id 0), of the customers
_OPEN = (
    "SELECT customer_id, segment_id, entered_at FROM segment_memberships"
    " WHERE customer_id = ANY($1::text[]) AND left_at IS NULL"
    " UNION ALL SELECT customer_id, 0, due_at FROM segment_clock"
    " WHERE customer_id = ANY($1::text[])"
)


@dataclass(frozen=True, slots=True)
class Held:
    """The customers' open spans (customer → segment id → when it entered) and their clocks
    (customer → due instant; customers without one: absent)."""

    spans: dict[str, dict[int, datetime]]
    clocks: dict[str, datetime]


async def open_spans(conn: AsyncConnection, customer_ids: Iterable[str]) -> Held:
    """The customers' open spans and their segment clocks, in one statement."""
    wanted = sorted(set(customer_ids))
    held = Held({}, {})
    if not wanted:
        return held
    for cid, sid, at in await (await driver(conn)).fetch(_OPEN, wanted):
        if sid == 0:
            held.clocks[cid] = at
        else:
            held.spans.setdefault(cid, {})[int(sid)] = at
    return held


_LAST_EXITS = (
    "SELECT customer_id, max(left_at) FROM segment_memberships WHERE segment_id = ANY($1)"
    " AND left_at > $2 AND customer_id = ANY($3::text[]) GROUP BY customer_id"
)


async def last_exits(
    conn: AsyncConnection, segment_ids: Sequence[int], customer_ids: Sequence[str], after: datetime
) -> dict[str, datetime]:
    """Each customer's latest exit after ``after`` from one of ``segment_ids`` (none: absent)."""
    if not (segment_ids and customer_ids):
        return {}
    rows = await (await driver(conn)).fetch(
        _LAST_EXITS, list(segment_ids), after, sorted(customer_ids)
    )
    return {cid: at for cid, at in rows}


# The rows go as JSON arrays of arrays (positional: no keys to build in Python nor to look up
# in Postgres), one parameter each.
_WRITE = """
WITH closed AS (
    UPDATE segment_memberships AS m SET left_at = CAST(x->>2 AS timestamptz), left_by = x->>3
    FROM jsonb_array_elements($1::jsonb) AS x
    WHERE m.segment_id = CAST(x->>0 AS bigint) AND m.customer_id = x->>1
        AND m.left_at IS NULL
    RETURNING 1
), opened AS (
    INSERT INTO segment_memberships
        (segment_id, customer_id, version, entered_at, entered_by, left_at, left_by)
    SELECT CAST(x->>0 AS bigint), x->>1, CAST(x->>2 AS integer), CAST(x->>3 AS timestamptz),
        x->>4, CAST(x->>5 AS timestamptz), x->>6
    FROM jsonb_array_elements($2::jsonb) AS x
    RETURNING 1
), clocked AS (
    INSERT INTO segment_clock (customer_id, due_at)
    SELECT x->>0, CAST(x->>1 AS timestamptz) FROM jsonb_array_elements($3::jsonb) AS x
    ON CONFLICT (customer_id) DO UPDATE SET due_at = CASE WHEN $5::boolean
        THEN LEAST(segment_clock.due_at, excluded.due_at) ELSE excluded.due_at END
    RETURNING 1
), unclocked AS (
    DELETE FROM segment_clock WHERE NOT $5::boolean
        AND customer_id IN (SELECT jsonb_array_elements_text($4::jsonb))
    RETURNING 1
)
SELECT (SELECT count(*) FROM closed), (SELECT count(*) FROM opened),
    (SELECT count(*) FROM clocked), (SELECT count(*) FROM unclocked)
"""
_OPEN_KEY = "ux_segment_memberships_open"


async def write_spans(
    conn: AsyncConnection,
    *,
    entered: Sequence[tuple[Span, int]],
    left: Sequence[Span],
    clocks: Sequence[tuple[str, datetime | None]],
    keep_due: bool = False,
) -> None:
    """Open the ``entered`` spans (each with its segment's version), close the ``left`` ones
    and set the customers' clocks (None: time alone changes nothing of it; give only those
    that change; ``keep_due``: a clock already set stays if earlier, as when only some
    segments were evaluated), in one statement. A span both opened and closed here (a
    sweep's walk crossing two thresholds) is written closed. A span to close that is not
    open, or one to open that is, raises
    :class:`MembershipsChanged`."""
    if not (entered or left or clocks):
        return
    # the statement's parts share one snapshot: its UPDATE cannot see its INSERT's rows
    opened = {(s.segment_id, s.customer_id, s.entered_at) for s, _ in entered}
    ends = {(s.segment_id, s.customer_id, s.entered_at): s for s in left}
    closing = [
        (s.segment_id, s.customer_id, s.at, s.cause) for key, s in ends.items() if key not in opened
    ]
    opening = []
    for s, version in entered:
        end = ends.get((s.segment_id, s.customer_id, s.entered_at))
        left_at, left_by = (None, None) if end is None else (end.at, end.cause)
        opening.append((s.segment_id, s.customer_id, version, s.at, s.cause, left_at, left_by))
    due = [(c, at) for c, at in clocks if at is not None]
    never = [c for c, at in clocks if at is None]
    try:
        counts = await (await driver(conn)).fetchrow(
            _WRITE,
            orjson.dumps(closing).decode(),
            orjson.dumps(opening).decode(),
            orjson.dumps(due).decode(),
            orjson.dumps(never).decode(),
            keep_due,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != _OPEN_KEY:
            raise
        raise MembershipsChanged("a span this write opens was opened concurrently") from exc
    assert counts is not None
    if counts[0] != len(closing):
        raise MembershipsChanged(
            f"{len(closing) - counts[0]} of {len(closing)} spans closed concurrently"
        )


async def linked_ids(conn: AsyncConnection, customer_id: str) -> list[str]:
    """The customer's id and the anonymous ids linked to it (all erased with it)."""
    rows = await (await driver(conn)).fetch(
        "SELECT anonymous_id FROM identity_links WHERE customer_id = $1 ORDER BY 1", customer_id
    )
    return [customer_id, *(r[0] for r in rows)]


async def forget_customer(conn: AsyncConnection, customer_ids: Sequence[str]) -> None:
    """An erased customer's spans keep their times but no longer its id; its clock goes."""
    if not customer_ids:
        return
    drv = await driver(conn)
    await drv.execute(
        "UPDATE segment_memberships SET customer_id = NULL WHERE customer_id = ANY($1::text[])"
        " AND left_at IS NOT NULL",
        list(customer_ids),
    )
    await drv.execute(
        "DELETE FROM segment_clock WHERE customer_id = ANY($1::text[])", list(customer_ids)
    )


_DUE = (
    "SELECT k.customer_id, k.due_at FROM segment_clock AS k WHERE k.due_at <= $1"
    " ORDER BY k.due_at, k.customer_id LIMIT $2"
)


async def lock_due(
    conn: AsyncConnection, now: datetime, limit: int
) -> tuple[int, list[tuple[CustomerState, datetime]]]:
    """How many of the clocks due by ``now`` were looked at (at most ``limit``, earliest
    first), and those customers with their due time, their rows locked; rows another
    transaction holds are skipped (it evaluates them itself)."""
    due = {cid: at for cid, at in await (await driver(conn)).fetch(_DUE, now, limit)}
    if not due:
        return 0, []
    rows = await conn.execute(
        select(customers)
        .where(customers.c.customer_id.in_(list(due)))
        .order_by(customers.c.customer_id)
        .with_for_update(skip_locked=True)
    )
    states = [state_from_row(r) for r in rows.all()]
    gone = set(due) - {s.customer_id for s in states}
    if gone:  # clocks of customers no longer there (a merge took them): nothing to evaluate
        await drop_clocks(conn, sorted(gone))
    return len(due), [(s, due[s.customer_id]) for s in states]


async def drop_clocks(conn: AsyncConnection, customer_ids: Sequence[str]) -> None:
    await (await driver(conn)).execute(
        "DELETE FROM segment_clock WHERE customer_id = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM customers AS c"
        " WHERE c.customer_id = segment_clock.customer_id)",
        list(customer_ids),
    )
