"""The outbox: lifecycle records queued in a writer's transaction, then published by the
relay (:mod:`clm_stage_engine.outbox` holds the row format)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.db import driver, lone_statement
from clm_infra.replay import RELAY_LOCK_ID
from clm_stage_engine.outbox import pack_records


async def insert_outbox(
    conn: AsyncConnection, topic: str, records: Sequence[tuple[str, bytes]]
) -> tuple[int, bytes] | None:
    """Queue ``records`` ((customer key, value) pairs) for ``topic``, in order, as ONE outbox
    row of the caller's transaction (see :mod:`clm_stage_engine.outbox`): published once it
    commits, never if it rolls back. Returns the row's id and payload (None: no records), for
    the relay's :class:`~clm_stage_engine.relay.PayloadCache` once the transaction commits."""
    if not records:
        return None
    payload = pack_records(records)
    row_id = await (await driver(conn)).fetchval(_INSERT_OUTBOX, topic, len(records), payload)
    return int(row_id), payload


_INSERT_OUTBOX = (
    "INSERT INTO outbox_batches (topic, records, payload) VALUES ($1, $2, $3) RETURNING id"
)


async def take_relay_lock(conn: AsyncConnection) -> bool:
    """The relay's transaction-scoped advisory lock (one relay publishes at a time)."""
    locked = await conn.execute(
        text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": RELAY_LOCK_ID}
    )
    return bool(locked.scalar_one())


# The oldest rows of both tables (ids from one sequence), as many as hold ``n`` records (and
# always the first): the window sums the records before each row over at most ``n`` rows (a
# row holds at least one record). ``key`` is set on the one-record rows of ``outbox``. The
# payload of a row in ``cached`` stays in Postgres (not even read from its TOAST chunks).
_PENDING = text(
    "SELECT id, topic, records, key,"
    " CASE WHEN key IS NULL AND id = ANY(CAST(:cached AS BIGINT[])) THEN NULL ELSE payload END"
    " AS payload FROM ("
    " SELECT *, sum(records) OVER (ORDER BY id) - records AS before FROM ("
    "  (SELECT id, topic, records, NULL::text AS key, payload FROM outbox_batches"
    "   ORDER BY id LIMIT :n)"
    "  UNION ALL"
    "  (SELECT id, topic, 1, key, payload FROM outbox ORDER BY id LIMIT :n)"
    "  ORDER BY id LIMIT :n"
    " ) AS oldest"
    ") AS placed WHERE before < :n ORDER BY id"
)


async def pending_rows(conn: AsyncConnection, records: int, cached: Iterable[int]) -> list[Any]:
    """The oldest rows holding up to ``records`` records (at least one row), in id order:
    ``id, topic, records, key, payload``; rows in ``cached`` come without their payload."""
    return list((await conn.execute(_PENDING, {"n": records, "cached": sorted(cached)})).all())


_DELETE = text("DELETE FROM outbox_batches WHERE id = ANY(CAST(:ids AS BIGINT[]))")
_DELETE_LEGACY = text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS BIGINT[]))")


async def delete_published(conn: AsyncConnection, rows: Sequence[Any]) -> None:
    """Delete published rows (of :func:`pending_rows`) from the table each came from."""
    if batches := [r.id for r in rows if r.key is None]:
        await conn.execute(_DELETE, {"ids": batches})
    if legacy := [r.id for r in rows if r.key is not None]:
        await conn.execute(_DELETE_LEGACY, {"ids": legacy})


_BACKLOG_SQL = (
    "SELECT (SELECT coalesce(sum(records), 0) FROM outbox_batches) + (SELECT count(*) FROM outbox)"
)
_BACKLOG = text(_BACKLOG_SQL)


async def backlog(conn: AsyncConnection) -> int:
    """Records waiting in the outbox (a count is a scan: not per batch)."""
    return int((await conn.execute(_BACKLOG)).scalar_one())


async def backlog_alone(engine: AsyncEngine) -> int:
    """:func:`backlog`, as one statement outside any transaction."""
    async with lone_statement(engine) as conn:
        return int(await conn.fetchval(_BACKLOG_SQL))
