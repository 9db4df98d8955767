"""Postgres unavailable, for real: what the driver raises is told from a wrong statement, and the
HTTP side answers 503 with Retry-After — or, for a key it saw recently, goes on working."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from clm_infra.db import create_engine, unavailable
from clm_infra.settings import CommonSettings, DatabaseSettings
from clm_ingest.settings import IngestSettings
from tests.chaos.latency_proxy import LatencyProxy
from tests.factories import event_doc
from tests.integration.ingest_server import ingest_client
from tests.keys import WRITE


@pytest.fixture
async def proxy(common: CommonSettings) -> AsyncIterator[LatencyProxy]:
    """A TCP hop to the test's Postgres; closing it makes Postgres unreachable."""
    url = make_url(common.database.url)
    hop = await LatencyProxy(url.host or "127.0.0.1", url.port or 5432).start()
    yield hop
    await hop.close()


def via(proxy: LatencyProxy, database_url: str) -> str:
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


async def caught(database_url: str, sql: str) -> BaseException:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{sql!r} did not fail")


async def test_an_unreachable_or_vanishing_postgres_is_unavailable_a_bad_statement_is_not(
    common: CommonSettings, proxy: LatencyProxy
) -> None:
    assert not unavailable(await caught(common.database.url, "SELECT * FROM no_such_table"))
    # the server ends our own session mid-statement (what a restart does to every session)
    killed = await caught(common.database.url, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert unavailable(killed), repr(killed)
    url = via(proxy, common.database.url)
    await proxy.close()
    refused = await caught(url, "SELECT 1")
    assert unavailable(refused), repr(refused)


async def test_the_ingest_answers_503_while_postgres_is_away_but_keeps_a_known_key_working(
    common: CommonSettings, proxy: LatencyProxy
) -> None:
    settings = IngestSettings(
        database=DatabaseSettings(url=via(proxy, common.database.url)), auth_cache_s=0
    )
    async with ingest_client(settings) as client:
        first = await client.post("/v1/events", json=event_doc("signup"), headers=WRITE)
        assert first.status_code == 202, first.text
        await proxy.close()  # Postgres unreachable from here on

        again = await client.post("/v1/events", json=event_doc("signup"), headers=WRITE)
        assert again.status_code == 202, again.text  # its expired answer still stands

        stranger = {"Authorization": "Bearer never-seen-key"}
        refused = await client.post("/v1/events", json=event_doc("signup"), headers=stranger)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert int(refused.headers["Retry-After"]) >= 1
        assert "database" in refused.json()["detail"]
