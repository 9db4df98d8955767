"""The loop's own Postgres connection, kept between batches and dropped on any failure."""

from __future__ import annotations

import contextlib

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class LoopConnection:
    """One connection for every batch of a loop, with ``session`` statements run once when
    it opens. It is discarded, never returned to the pool (it carries ``session``), and
    closed after any failure, so a broken one is never reused."""

    def __init__(self, engine: AsyncEngine, session: tuple[str, ...]) -> None:
        self._engine = engine
        self._session = session
        self._conn: AsyncConnection | None = None

    async def get(self) -> AsyncConnection:
        """The open connection, or a new one."""
        if self._conn is None:
            conn = await self._engine.connect()
            try:
                for statement in self._session:
                    await conn.exec_driver_sql(statement)
                await conn.commit()
            except BaseException:
                await conn.invalidate()
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        """Close it; the next batch opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
