"""The data keys in Postgres: made on first use, read, shredded on erasure, re-wrapped.

Made without a race between ingest replicas: each inserts the keys it lacks with ``ON
CONFLICT DO NOTHING`` and reads back the ones another replica's insert won (a statement of
its own, so it sees what committed meanwhile); every replica then seals under the same key.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.db import any_text
from clm_infra.privacy.ciphers import DataKey, MasterKeys, Undecryptable
from clm_infra.privacy.schema import data_keys


@dataclass(frozen=True, slots=True)
class StoredKey:
    subject: str
    key_id: str
    master_id: str
    wrapped: bytes


async def read_keys(conn: AsyncConnection, subjects: Collection[str]) -> dict[str, StoredKey]:
    """The stored (wrapped) keys of these subjects that exist."""
    if not subjects:
        return {}
    rows = await conn.execute(
        select(
            data_keys.c.subject, data_keys.c.key_id, data_keys.c.master_id, data_keys.c.wrapped
        ).where(data_keys.c.subject == any_text(sorted(subjects)))
    )
    return {r.subject: StoredKey(r.subject, r.key_id, r.master_id, r.wrapped) for r in rows}


async def make_keys(
    conn: AsyncConnection, masters: MasterKeys, subjects: Collection[str]
) -> dict[str, DataKey]:
    """The data key of every subject, made for those that have none (no race: see above)."""
    found = await read_keys(conn, subjects)
    keys = {s: masters.unwrap(s, k.key_id, k.master_id, k.wrapped) for s, k in found.items()}
    missing = sorted(set(subjects) - found.keys())
    if not missing:
        return keys
    made = {s: masters.new_data_key(s) for s in missing}
    won = await conn.execute(
        insert(data_keys)
        .on_conflict_do_nothing(index_elements=["subject"])
        .returning(data_keys.c.subject),
        [
            {"subject": s, "key_id": k.key_id, "master_id": masters.current_id, "wrapped": w}
            for s, (k, w) in made.items()
        ],
    )
    ours = {r.subject for r in won}
    keys.update({s: made[s][0] for s in ours})
    lost = [s for s in missing if s not in ours]
    theirs = await read_keys(conn, lost)
    keys.update({s: masters.unwrap(s, k.key_id, k.master_id, k.wrapped) for s, k in theirs.items()})
    return keys


async def shred(conn: AsyncConnection, subjects: Collection[str]) -> int:
    """Delete the subjects' data keys: every part sealed under them is unreadable from now."""
    if not subjects:
        return 0
    gone = await conn.execute(
        delete(data_keys).where(data_keys.c.subject == any_text(sorted(subjects)))
    )
    return int(gone.rowcount or 0)


async def rewrap_page(
    conn: AsyncConnection, masters: MasterKeys, limit: int, after: str | None = None
) -> list[str]:
    """Re-wrap with the current master key up to ``limit`` data keys still under another
    configured one, in subject order from after ``after`` (rows another rotation holds are
    skipped); returns their subjects, in order (the last one is where the next page starts).

    Walking the subjects forward keeps a page an index range scan: restarting from the
    first subject every page would read every key re-wrapped so far again. Keys under a
    master key that is not configured are left alone (:func:`count_by_master` finds them).
    """
    older = [m for m in masters.ids if m != masters.current_id]
    if not older:
        return []
    query = (
        select(data_keys.c.subject, data_keys.c.key_id, data_keys.c.master_id, data_keys.c.wrapped)
        .where(data_keys.c.master_id == any_text(older))
        .order_by(data_keys.c.subject)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        query = query.where(data_keys.c.subject > after)
    rows = (await conn.execute(query)).all()
    if not rows:
        return []
    await conn.execute(
        update(data_keys)
        .where(data_keys.c.subject == bindparam("s"))
        .values(master_id=bindparam("m"), wrapped=bindparam("w"), rewrapped_at=func.now()),
        [
            {"s": k.subject, "m": masters.current_id, "w": _rewrapped(masters, k)}
            for k in (StoredKey(r.subject, r.key_id, r.master_id, r.wrapped) for r in rows)
        ],
    )
    return [r.subject for r in rows]


def _rewrapped(masters: MasterKeys, row: StoredKey) -> bytes:
    try:
        return masters.rewrap(row.subject, row.key_id, row.master_id, row.wrapped)
    except Undecryptable:
        raise Undecryptable(
            f"a data key under master key {row.master_id!r} does not open with the configured "
            f"{row.master_id!r}: is it the key that wrapped it?"
        ) from None


async def count_by_master(conn: AsyncConnection) -> dict[str, int]:
    """How many data keys each master key wraps."""
    rows = await conn.execute(
        select(data_keys.c.master_id, func.count()).group_by(data_keys.c.master_id)
    )
    return {m: int(n) for m, n in rows}


class KeyRing:
    """The ingest's data keys: made on first use, kept in memory (at most ``size`` of them,
    each for ``ttl_s``, so an erasure elsewhere is seen within that time)."""

    def __init__(self, engine: AsyncEngine, masters: MasterKeys, *, size: int, ttl_s: float):
        self._engine = engine
        self._masters = masters
        self._size = size
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, DataKey]] = {}

    async def keys_for(self, subjects: Collection[str]) -> dict[str, DataKey]:
        """The data key of every subject (made if it has none)."""
        now = time.monotonic()
        out: dict[str, DataKey] = {}
        missing: list[str] = []
        for subject in subjects:
            hit = self._cache.get(subject)
            if hit is not None and now - hit[0] < self._ttl_s:
                out[subject] = hit[1]
            else:
                missing.append(subject)
        if missing:
            async with self._engine.begin() as conn:
                made = await make_keys(conn, self._masters, missing)
            out.update(made)
            self._remember(now, made)
        return out

    def _remember(self, now: float, keys: dict[str, DataKey]) -> None:
        if self._size <= 0:
            return
        cache = self._cache
        for subject, key in keys.items():
            cache.pop(subject, None)
            while len(cache) >= self._size:
                del cache[next(iter(cache))]  # the oldest remembered
            cache[subject] = (now, key)
