"""What every service's lifespan opens and closes: its Postgres engine and its workers.

A service's ``app.py`` composes them::

    async with database(settings, "clm-metrics") as engine:
        app.state.clm = State(...)
        async with build_workers(state).started() as workers:
            app.state.workers = workers
            yield
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.db import create_engine
from clm_infra.settings import CommonSettings


@asynccontextmanager
async def database(settings: CommonSettings, app_name: str) -> AsyncIterator[AsyncEngine]:
    """The process's connection pool, disposed of when the block ends."""
    engine = create_engine(
        settings.database.url, pool_size=settings.database.pool_size, app_name=app_name
    )
    try:
        yield engine
    finally:
        await engine.dispose()
