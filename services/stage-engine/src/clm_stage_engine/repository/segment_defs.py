"""Segment definitions: create, read, list, change and (softly) delete them, with their
versions, and the catalog bump that tells the writers of customer rows to reload them.

Every change runs in the caller's transaction and holds the catalog's advisory lock
(:data:`~clm_infra.segment_schema.CATALOG_LOCK`) exclusively: the writers of customer rows
hold it shared, so once a change commits each later write evaluates the new definitions.
Holding it also serialises the changes themselves, so the checks made under it (how many
are active, whether a name is taken) stand until the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.segment_schema import (
    CATALOG_LOCK,
    segment_catalog,
    segment_memberships,
    segment_versions,
    segments,
)

#: The backfill a new condition starts from: none of it done yet (the backfill worker
#: evaluates every customer under ``backfill_version`` and records its progress here).
_NEW_BACKFILL: dict[str, Any] = {
    "backfill_after": None,
    "backfill_done": 0,
    "backfill_total": None,
    "backfill_started_at": None,
    "backfill_finished_at": None,
}
_NO_BACKFILL: dict[str, Any] = {**_NEW_BACKFILL, "backfill_version": None}

#: Why a span closed when its segment was deleted.
DELETED = "deleted"


class NameTaken(Exception):
    """Another segment that is not deleted has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class TooManySegments(Exception):
    """As many segments as allowed are defined already."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def lock_catalog(conn: AsyncConnection) -> None:
    """The catalog's advisory lock, exclusive, until the transaction ends."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CATALOG_LOCK})


async def _bump_catalog(conn: AsyncConnection) -> None:
    await conn.execute(
        update(segment_catalog)
        .where(segment_catalog.c.id == 1)
        .values(version=segment_catalog.c.version + 1)
    )


async def _name_taken(conn: AsyncConnection, name: str, other_than: int | None = None) -> bool:
    query = select(segments.c.id).where(segments.c.name == name, segments.c.deleted_at.is_(None))
    if other_than is not None:
        query = query.where(segments.c.id != other_than)
    return (await conn.execute(query.limit(1))).first() is not None


async def _add_version(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(
        insert(segment_versions).values(
            segment_id=row["id"],
            version=row["version"],
            name=row["name"],
            description=row["description"],
            condition=row["condition"],
            created_at=row["updated_at"],
        )
    )


async def create_segment(
    conn: AsyncConnection,
    *,
    name: str,
    description: str,
    condition: dict[str, Any],
    announce_backfill: bool,
    max_active: int,
) -> dict[str, Any]:
    """A new segment (version 1, its backfill pending) and its version row; the catalog
    bumped. :class:`TooManySegments` when ``max_active`` are defined, :class:`NameTaken`."""
    await lock_catalog(conn)
    active = await conn.execute(
        select(func.count()).select_from(segments).where(segments.c.deleted_at.is_(None))
    )
    if active.scalar_one() >= max_active:
        raise TooManySegments(max_active)
    if await _name_taken(conn, name):
        raise NameTaken(name)
    created = await conn.execute(
        insert(segments)
        .values(
            name=name,
            description=description,
            condition=condition,
            version=1,
            announce_backfill=announce_backfill,
            backfill_version=1,
            **_NEW_BACKFILL,
        )
        .returning(*segments.c)
    )
    row = dict(created.one()._mapping)
    await _add_version(conn, row)
    await _bump_catalog(conn)
    return row


async def get_segment(conn: AsyncConnection, segment_id: int) -> dict[str, Any] | None:
    """The segment's row, deleted or not (``deleted_at`` says), or None."""
    found = await conn.execute(select(segments).where(segments.c.id == segment_id))
    row = found.first()
    return None if row is None else dict(row._mapping)


async def list_segments(conn: AsyncConnection) -> list[dict[str, Any]]:
    """The segments not deleted, by id."""
    rows = await conn.execute(
        select(segments).where(segments.c.deleted_at.is_(None)).order_by(segments.c.id)
    )
    return [dict(r._mapping) for r in rows]


async def list_versions(conn: AsyncConnection, segment_id: int) -> list[dict[str, Any]]:
    """The segment's versions as they were written, oldest first."""
    rows = await conn.execute(
        select(segment_versions)
        .where(segment_versions.c.segment_id == segment_id)
        .order_by(segment_versions.c.version)
    )
    return [dict(r._mapping) for r in rows]


async def existing_segments(conn: AsyncConnection, ids: Iterable[int]) -> set[int]:
    """Which of ``ids`` are segments not deleted."""
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    rows = await conn.execute(
        select(segments.c.id).where(segments.c.id.in_(wanted), segments.c.deleted_at.is_(None))
    )
    return {int(sid) for (sid,) in rows}


async def patch_segment(
    conn: AsyncConnection, segment_id: int, changes: dict[str, Any]
) -> dict[str, Any] | None:
    """The segment changed by ``changes`` (any of name, description, condition,
    announce_backfill; ``condition`` in its canonical form), or None when there is no such
    segment (or it was deleted). A different condition is a new version, with its version
    row and a new backfill; any change bumps the catalog (the records carry the name).
    :class:`NameTaken` when another segment has the new name."""
    await lock_catalog(conn)
    found = await conn.execute(
        select(segments)
        .where(segments.c.id == segment_id, segments.c.deleted_at.is_(None))
        .with_for_update()
    )
    current = found.first()
    if current is None:
        return None
    row = dict(current._mapping)
    values = {k: v for k, v in changes.items() if row[k] != v}
    if not values:
        return row
    if "name" in values and await _name_taken(conn, values["name"], other_than=segment_id):
        raise NameTaken(values["name"])
    new_version = "condition" in values
    if new_version:
        values |= {"version": row["version"] + 1, "backfill_version": row["version"] + 1}
        values |= _NEW_BACKFILL
    updated = await conn.execute(
        update(segments)
        .where(segments.c.id == segment_id)
        .values(**values, updated_at=func.now())
        .returning(*segments.c)
    )
    row = dict(updated.one()._mapping)
    if new_version:
        await _add_version(conn, row)
    await _bump_catalog(conn)
    return row


async def delete_segment(conn: AsyncConnection, segment_id: int) -> bool:
    """Whether a segment not deleted had this id: now it is (its name free again, its
    backfill dropped), its open spans closed (``left_by`` ``deleted``) and the catalog
    bumped."""
    await lock_catalog(conn)
    deleted = await conn.execute(
        update(segments)
        .where(segments.c.id == segment_id, segments.c.deleted_at.is_(None))
        .values(deleted_at=func.now(), updated_at=func.now(), **_NO_BACKFILL)
    )
    if not deleted.rowcount:
        return False
    await conn.execute(
        update(segment_memberships)
        .where(
            segment_memberships.c.segment_id == segment_id,
            segment_memberships.c.left_at.is_(None),
        )
        .values(left_at=func.now(), left_by=DELETED)
    )
    await _bump_catalog(conn)
    return True
