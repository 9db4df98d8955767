"""The API keys integration and e2e tests store, and the headers that present them."""

from __future__ import annotations

from clm_infra.db import create_engine
from clm_infra.kafka import ensure_topics
from clm_infra.keys import store_key
from clm_infra.settings import CommonSettings


def bearer(key: str) -> dict[str, str]:
    """The ``Authorization`` header presenting ``key``."""
    return {"Authorization": f"Bearer {key}"}


async def seed(settings: CommonSettings, *, write: str, read: str, admin: str) -> None:
    """Create the topics ``settings`` name and store a write key (source ``shop``), a read
    token (``analytics``) and an admin key (``ops``) in its database."""
    await ensure_topics(settings)
    engine = create_engine(settings.database.url, pool_size=1)
    async with engine.begin() as conn:
        await store_key(conn, key=write, kind="write", source="shop")
        await store_key(conn, key=read, kind="read", source="analytics")
        await store_key(conn, key=admin, kind="admin", source="ops")
    await engine.dispose()
