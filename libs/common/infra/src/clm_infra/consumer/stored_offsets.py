"""The consumed offsets in Postgres, as the loop reads and advances them: the truth it seeks
to on assignment, and the compare-and-set each batch's transaction makes
(:mod:`clm_infra.offsets`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.consumer.positions import Key
from clm_infra.offsets import OffsetAdvance, advance_offsets, load_offsets

log = logging.getLogger(__name__)


async def read(engine: AsyncEngine, group_id: str, keys: Iterable[Key]) -> dict[Key, int]:
    """The stored next offsets of ``keys`` (a partition with none stored is left out)."""
    async with engine.connect() as conn:
        return await load_offsets(conn, group_id, sorted(keys))


async def read_until_up(
    engine: AsyncEngine, group_id: str, keys: Iterable[Key], backoff_s: float
) -> dict[Key, int]:
    """:func:`read`, retried every ``backoff_s`` while Postgres cannot answer."""
    keys = sorted(keys)
    while True:
        try:
            return await read(engine, group_id, keys)
        except Exception:
            log.warning("cannot read stored offsets; retrying", exc_info=True)
            await asyncio.sleep(backoff_s)


async def advance(conn: AsyncConnection, group_id: str, advances: Iterable[OffsetAdvance]) -> None:
    """Move the stored offsets on in the caller's transaction, or fence it
    (:class:`~clm_infra.offsets.OffsetFenced`: another owner moved one)."""
    await advance_offsets(conn, group_id, list(advances))
