"""Async SQLAlchemy engine and session plumbing (asyncpg)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


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
