"""Async SQLAlchemy engine and session plumbing (asyncpg)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

T = TypeVar("T")


def create_engine(database_url: str, *, pool_size: int = 10, app_name: str = "clm") -> AsyncEngine:
    """An engine for one process; create it in the lifespan, dispose it on shutdown."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={
            "server_settings": {"application_name": app_name},
            "timeout": 5,
            "command_timeout": 60,
        },
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """Sessions that never expire loaded objects on commit (the boundary owns commits)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> bool:
    """True when Postgres answers a trivial query."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


#: asyncpg refuses statements with more than 32767 bind parameters.
MAX_BIND_PARAMS = 32_000


def chunks_for(rows: Sequence[T], columns: int) -> Iterator[Sequence[T]]:
    """Split a multi-row statement's rows so each statement stays under the bind limit.

    A batch's rows still go in one statement per table whenever they fit (the usual case);
    a very wide or very large batch takes a few.
    """
    size = max(1, MAX_BIND_PARAMS // max(1, columns))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
