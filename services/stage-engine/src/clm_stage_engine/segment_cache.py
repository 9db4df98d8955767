"""The active segments, compiled once per catalog version (each process keeps the version it
last read; a writer reads the catalog's version in its transaction and asks for that one)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.segments.compile import compile_condition
from clm_domain.segments.conditions import ConditionError, parse_condition
from clm_domain.segments.membership import Segment
from clm_stage_engine.repository import segment_live

log = logging.getLogger(__name__)


class SegmentCache:
    def __init__(self) -> None:
        self.version: int | None = None
        self.segments: tuple[Segment, ...] = ()
        self.paused = False  # a replay runs: writers leave memberships alone

    async def at(self, conn: AsyncConnection, version: int) -> tuple[Segment, ...]:
        """The segments of catalog ``version`` (read in ``conn``'s transaction, which holds
        the catalog's lock: the definitions read are that version's); none while paused."""
        if version != self.version:
            definitions, self.paused = await segment_live.active_definitions(conn)
            self.segments = compiled(definitions)
            self.version = version
        return () if self.paused else self.segments

    async def definitions(self, conn: AsyncConnection) -> tuple[tuple[Segment, ...], bool]:
        """The segments now (the catalog's lock taken shared), paused or not, and whether
        memberships are paused."""
        await self.at(conn, await segment_live.catalog_version(conn))
        return self.segments, self.paused

    async def current(self, conn: AsyncConnection) -> tuple[Segment, ...]:
        """The segments now, the catalog's lock taken shared for ``conn``'s transaction."""
        return await self.at(conn, await segment_live.catalog_version(conn))


def compiled(definitions: list[segment_live.Definition]) -> tuple[Segment, ...]:
    """The definitions compiled; one that no longer parses (a newer engine wrote it) is
    left out, loudly, rather than stopping every write."""
    out = []
    for d in definitions:
        try:
            predicate = compile_condition(parse_condition(d.condition))
        except ConditionError:
            log.error("segment definition does not parse; skipped", extra={"segment": d.id})
            continue
        out.append(Segment(id=d.id, version=d.version, name=d.name, predicate=predicate))
    return tuple(out)
