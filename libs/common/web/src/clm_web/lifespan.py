"""What every service's lifespan opens and closes: its Postgres engine and its workers.

A service's ``app.py`` composes them::

    async with database(settings, "clm-metrics") as engine:
        app.state.clm = State(...)
        async with workers_running(app, build_workers(state)):
            yield
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.db import create_engine
from clm_infra.settings import CommonSettings
from clm_infra.worker import Workers


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


@asynccontextmanager
async def workers_running(app: FastAPI, workers: Workers) -> AsyncIterator[None]:
    """``workers`` started for the block and stopped when it ends; meanwhile on
    ``app.state.workers``, where readiness looks at them."""
    async with workers.started() as started:
        app.state.workers = started
        yield
