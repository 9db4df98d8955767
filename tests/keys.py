"""The API keys integration and e2e tests store, and the headers that present them."""

from __future__ import annotations

from clm_infra.db import create_engine
from clm_infra.kafka import ensure_topics
from clm_infra.keys import store_key
from clm_infra.settings import CommonSettings

WRITE_KEY = "test-write-key"
READ_TOKEN = "test-read-token"
ADMIN_KEY = "test-admin-key"


def bearer(key: str) -> dict[str, str]:
    """The ``Authorization`` header presenting ``key``."""
    return {"Authorization": f"Bearer {key}"}


WRITE = bearer(WRITE_KEY)
READ = bearer(READ_TOKEN)
ADMIN = bearer(ADMIN_KEY)


async def seed(settings: CommonSettings) -> None:
    """Create the topics ``settings`` name and store the write key (source ``shop``), the
    read token (``analytics``) and the admin key (``ops``) in its database."""
    await ensure_topics(settings)
    engine = create_engine(settings.database.url, pool_size=1)
    async with engine.begin() as conn:
        await store_key(conn, key=WRITE_KEY, kind="write", source="shop")
        await store_key(conn, key=READ_TOKEN, kind="read", source="analytics")
        await store_key(conn, key=ADMIN_KEY, kind="admin", source="ops")
    await engine.dispose()
