"""The outbox relay on real Kafka and Postgres: one row per write, both row formats, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.db import create_engine
from clm_infra.kafka import make_producer
from clm_infra.replay import RELAY_LOCK_ID
from clm_infra.schema import outbox, outbox_batches
from clm_infra.settings import CommonSettings
from clm_stage_engine import repository
from clm_stage_engine.relay import OutboxGate, OutboxRelay, PayloadCache
from tests.conftest import Infra, alembic_upgrade
from tests.integration.conftest import read_topic


async def legacy_row(conn: AsyncConnection, topic: str, key: str, value: bytes) -> None:
    """A row as a stage engine before migration 0009 writes it (one record)."""
    await conn.execute(
        text("INSERT INTO outbox (topic, key, payload) VALUES (:t, :k, :v)"),
        {"t": topic, "k": key, "v": value},
    )


async def relay_all(relay: OutboxRelay) -> list[int]:
    """``relay_once`` until nothing is left; what each round sent."""
    rounds = [await relay.relay_once()]
    while rounds[-1]:
        rounds.append(await relay.relay_once())
    return rounds


async def waiting(db: AsyncEngine) -> list[int]:
    async with db.connect() as conn:
        return [
            (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (outbox, outbox_batches)
        ]


async def test_each_write_is_one_row_published_in_order_after_commit(
    common: CommonSettings, db: AsyncEngine
) -> None:
    topic = common.topics.lifecycle
    async with db.begin() as conn:
        await legacy_row(conn, topic, "c1", b"c1-0")
    async with db.begin() as conn:
        await repository.insert_outbox(
            conn, topic, [("c1", b"c1-1"), ("c2", b"c2-0"), ("c1", b"c1-2")]
        )
    async with db.begin() as conn:
        await legacy_row(conn, topic, "c2", b"c2-1")
    async with db.begin() as conn:
        await repository.insert_outbox(conn, topic, [("c3", b"c3-0")])
        await repository.insert_outbox(conn, topic, [])  # nothing to queue: no row
    async with db.connect() as conn:  # a write that fails: its records never go out
        transaction = await conn.begin()
        await repository.insert_outbox(conn, topic, [("c1", b"rolled back")])
        await transaction.rollback()
    assert await waiting(db) == [2, 2]

    producer = make_producer(common, client_id="test-relay")
    await producer.start()
    try:
        # a budget of 2 records: a round takes rows while fewer than 2 records came before
        relay = OutboxRelay(db, producer, batch=2, backlog_every_s=0)
        assert await relay.relay_once() == 4  # c1-0 (1 record), then the row of 3
        assert REGISTRY.get_sample_value("clm_outbox_backlog_records") == 2
        assert await relay_all(relay) == [2, 0]
    finally:
        await producer.stop()

    assert await waiting(db) == [0, 0]
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for record in await read_topic(common.kafka.bootstrap, topic, expect=6):
        by_key[record.key].append(record.value)
    assert by_key == {
        b"c1": [b"c1-0", b"c1-1", b"c1-2"],
        b"c2": [b"c2-0", b"c2-1"],
        b"c3": [b"c3-0"],
    }


async def test_one_relay_at_a_time(common: CommonSettings, db: AsyncEngine) -> None:
    topic = common.topics.lifecycle
    async with db.begin() as conn:
        await repository.insert_outbox(conn, topic, [("c1", b"one"), ("c2", b"two")])
    producer = make_producer(common, client_id="test-relay")
    await producer.start()
    try:
        relay = OutboxRelay(db, producer)
        async with db.begin() as other:  # another replica's relay holds the lock
            await other.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": RELAY_LOCK_ID})
            assert await relay.relay_once() == 0
        assert await waiting(db) == [0, 1]
        assert await relay_all(relay) == [2, 0]
    finally:
        await producer.stop()
    records = await read_topic(common.kafka.bootstrap, topic, expect=2)
    assert sorted((r.key, r.value) for r in records) == [(b"c1", b"one"), (b"c2", b"two")]


async def test_migration_0009_keeps_old_rows_in_order_both_ways(bare_database: str) -> None:
    await asyncio.to_thread(alembic_upgrade, bare_database, "upgrade", "0008_event_log_claims")
    db = create_engine(bare_database, pool_size=1)
    try:
        async with db.begin() as conn:
            await legacy_row(conn, "lc", "ç1", b"a")
        await asyncio.to_thread(alembic_upgrade, bare_database)
        async with db.begin() as conn:
            storage = await conn.execute(
                text(
                    "SELECT attstorage::text, attcompression::text FROM pg_attribute "
                    "WHERE attrelid = 'outbox_batches'::regclass AND attname = 'payload'"
                )
            )
            assert tuple(storage.one()) == ("x", "l")  # TOASTed with lz4, not pglz
            await repository.insert_outbox(conn, "lc", [("ç1", b"b"), ("c2", b""), ("c3", b"c")])
            await legacy_row(conn, "lc", "c2", b"d")  # an older engine, still running
            await repository.insert_outbox(conn, "lc", [("c3", b"e")])
        await asyncio.to_thread(
            alembic_upgrade, bare_database, "downgrade", "0008_event_log_claims"
        )
        async with db.connect() as conn:
            rows = (
                await conn.execute(text("SELECT topic, key, payload FROM outbox ORDER BY id"))
            ).all()
        assert [tuple(r) for r in rows] == [
            ("lc", "ç1", b"a"),
            ("lc", "ç1", b"b"),
            ("lc", "c2", b""),
            ("lc", "c3", b"c"),
            ("lc", "c2", b"d"),
            ("lc", "c3", b"e"),
        ]
    finally:
        await db.dispose()


async def test_rows_kept_in_memory_are_published_without_reading_their_payload(
    common: CommonSettings, db: AsyncEngine
) -> None:
    """The rows a process's batches committed go out from its memory: what Postgres holds of
    such a row's payload is never read (here it is made unreadable, and still the records go
    out whole and in order); a row not kept is read from Postgres as before."""
    topic = common.topics.lifecycle
    cache = PayloadCache()
    async with db.begin() as conn:
        kept = await repository.insert_outbox(conn, topic, [("c1", b"c1-0"), ("c2", b"c2-0")])
    assert kept is not None
    cache.put(*kept)  # after the commit, as the handler's committed hook does
    async with db.begin() as conn:
        await repository.insert_outbox(conn, topic, [("c1", b"c1-1")])  # another writer's
        await conn.execute(
            text("UPDATE outbox_batches SET payload = '\\x00' WHERE id = :id"), {"id": kept[0]}
        )

    producer = make_producer(common, client_id="test-relay")
    await producer.start()
    try:
        relay = OutboxRelay(db, producer, backlog_every_s=0, cache=cache)
        assert await relay_all(relay) == [3, 0]
    finally:
        await producer.stop()
    assert len(cache) == 0
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for record in await read_topic(common.kafka.bootstrap, topic, expect=3):
        by_key[record.key].append(record.value)
    assert by_key == {b"c1": [b"c1-0", b"c1-1"], b"c2": [b"c2-0"]}

    # without the payload in memory, the row Postgres holds is what the relay reads
    async with db.begin() as conn:
        await repository.insert_outbox(conn, topic, [("c3", b"c3-0")])
        await conn.execute(text("UPDATE outbox_batches SET payload = '\\x00'"))
    producer = make_producer(common, client_id="test-relay")
    await producer.start()
    try:
        with pytest.raises(ValueError, match="cannot hold 1 records"):
            await OutboxRelay(db, producer, cache=cache).relay_once()
    finally:
        await producer.stop()


async def test_the_gate_holds_the_lanes_while_the_relay_is_behind(db: AsyncEngine) -> None:
    """More records waiting than the limit: the gate holds until the relay publishes some."""
    gate = OutboxGate(db, limit=3, every_s=0.01)
    async with db.begin() as conn:
        await repository.insert_outbox(conn, "t", [("c1", b"a"), ("c2", b"b")])
    await asyncio.wait_for(gate(), timeout=5)  # 2 waiting: open
    async with db.begin() as conn:
        await repository.insert_outbox(conn, "t", [("c1", b"c"), ("c3", b"d")])
    await asyncio.sleep(0.02)  # past every_s: the gate's last answer (2) is not taken again
    held = asyncio.create_task(gate())  # 4 waiting: shut
    await asyncio.sleep(0.2)
    assert not held.done()
    async with db.begin() as conn:  # the relay published the oldest row
        await conn.execute(
            text("DELETE FROM outbox_batches WHERE id = (SELECT min(id) FROM outbox_batches)")
        )
    await asyncio.wait_for(held, timeout=5)
    assert await OutboxGate(db, limit=0).backlog() == 2
    await asyncio.wait_for(OutboxGate(db, limit=0)(), timeout=1)  # 0: never holds


async def test_the_gate_opens_when_postgres_cannot_say(infra: Infra) -> None:
    """Postgres unreachable: the gate lets the lane on (its batch fails and is retried as
    any other), rather than failing the consumer loop itself."""
    nowhere = create_engine("postgresql+asyncpg://clm:clm@127.0.0.1:1/clm", pool_size=1)
    try:
        await asyncio.wait_for(OutboxGate(nowhere, limit=1)(), timeout=10)
    finally:
        await nowhere.dispose()
