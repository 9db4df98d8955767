"""The batch consumer's lanes (loops side by side, on real Kafka), its connection and its
one-statement compare-and-set, on a real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.consumer import (
    BatchConsumer,
    BatchPolicy,
    BatchResult,
    Conflict,
    Handler,
    run_batch_consumer,
)
from clm_infra.db import create_engine
from clm_infra.offsets import OffsetAdvance, OffsetFenced, advance_offsets, load_offsets
from clm_infra.settings import CommonSettings
from clm_stage_engine.workers import FRESH_PLANS
from tests.integration.conftest import eventually, produce

PARTITIONS = 4


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


class _Consumer:
    """What the loop asks of its Kafka consumer on the path under test."""

    def __init__(self) -> None:
        self.hints: list[dict[Any, Any]] = []

    async def commit(self, offsets: dict[Any, Any]) -> None:
        self.hints.append(offsets)


class _Handler:
    """Records each batch's partitions and backend; with ``meet``, a batch waits until
    another batch is inside its transaction at the same time (it proves the lanes overlap)."""

    def __init__(self, meet: int = 0) -> None:
        self.batches: list[tuple[set[int], int]] = []
        self.inside = 0
        self.met = asyncio.Event()
        self.meet = meet

    async def __call__(self, conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        backend = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        self.batches.append(({r.partition for r in records}, backend))
        self.inside += 1
        if self.meet and self.inside >= self.meet:
            self.met.set()
        if self.meet:
            await asyncio.wait_for(self.met.wait(), timeout=5)
        return BatchResult(applied=len(records))


def _loop(db: AsyncEngine, handler: Handler, **policy: Any) -> BatchConsumer:
    loop = BatchConsumer(
        consumer=cast(Any, _Consumer()),
        engine=db,
        topic="t",
        group_id="g",
        handler=handler,
        dlq_producer=None,
        dlq_topic="dlq",
        policy=BatchPolicy(**policy),
    )
    loop.expected = {("t", p): None for p in range(PARTITIONS)}
    return loop


def _records(per_partition: int) -> list[Any]:
    return [
        SimpleNamespace(topic="t", partition=p, offset=o, key=b"k", value=b"v")
        for o in range(per_partition)
        for p in range(PARTITIONS)
    ]


async def test_lanes_are_group_members_applying_their_own_partitions_side_by_side(
    common: CommonSettings, db: AsyncEngine
) -> None:
    """The stage engine's lanes as it runs them: consumer loops in one process, each a member
    of the group with partitions of its own, on its own connection, neither waiting for the
    other between batches (the first batch of one is still in its transaction when the
    other's begins)."""
    handler = _Handler(meet=2)
    loops: dict[int, BatchConsumer] = {}
    stopping = asyncio.Event()

    def lane(n: int) -> Any:
        def register(loop: BatchConsumer | None) -> None:
            if loop is not None:
                loops[n] = loop

        return run_batch_consumer(
            common,
            db,
            name=f"it-lane-{n}",
            topic=common.topics.events,
            group_id="it-lanes",
            handler=handler,
            policy=BatchPolicy(max_records=50, max_wait_s=0.05),
            register=register,
            stopping=stopping,
        )

    tasks = [asyncio.create_task(lane(n)) for n in range(2)]
    try:

        async def both_assigned() -> bool:
            return len(loops) == 2 and all(loop.consumer.assignment() for loop in loops.values())

        await eventually(both_assigned, timeout=30)
        owned = [{tp.partition for tp in loops[n].consumer.assignment()} for n in range(2)]
        assert not owned[0] & owned[1]
        assert owned[0] | owned[1] == set(range(common.topics.events_partitions))
        await produce(
            common.kafka.bootstrap,
            common.topics.events,
            [(f"k{i}".encode(), b"v") for i in range(60)],
        )

        async def all_stored() -> dict[tuple[str, int], int] | None:
            async with db.connect() as conn:
                stored = await load_offsets(
                    conn,
                    "it-lanes",
                    [(common.topics.events, p) for p in range(common.topics.events_partitions)],
                )
            done = sum(v or 0 for v in stored.values()) == 60
            return stored if done else None

        await eventually(all_stored, timeout=30)
    finally:
        stopping.set()
        for loop in loops.values():
            loop.stop()
        await asyncio.gather(*tasks)
    assert handler.met.is_set()
    by_backend: dict[int, set[int]] = {}
    for parts, backend in handler.batches:
        by_backend.setdefault(backend, set()).update(parts)
    assert sorted(map(sorted, by_backend.values())) == sorted(map(sorted, owned))


async def test_the_loop_keeps_its_connection_between_batches(db: AsyncEngine) -> None:
    handler = _Handler()
    loop = _loop(db, handler)
    await loop._apply_with_retry(_records(per_partition=2))
    await loop._apply_with_retry(
        [r for r in _records(per_partition=4) if r.offset >= 2]  # the next records
    )
    await loop.close_connection()
    assert [parts for parts, _ in handler.batches] == [{0, 1, 2, 3}, {0, 1, 2, 3}]
    assert handler.batches[0][1] == handler.batches[1][1], "a new connection for a batch"
    async with db.connect() as conn:
        stored = await load_offsets(conn, "g", [("t", p) for p in range(PARTITIONS)])
    assert stored == {("t", p): 4 for p in range(PARTITIONS)}
    assert loop.expected == stored


async def test_one_moved_partition_fences_the_whole_batch(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await advance_offsets(conn, "g", [OffsetAdvance("t", p, None, 5) for p in range(3)])
    async with db.begin() as conn:  # another owner moved partition 1 on
        await advance_offsets(conn, "g", [OffsetAdvance("t", 1, 5, 9)])
    with pytest.raises(OffsetFenced, match=r"t\[1\] moved past 5"):
        async with db.begin() as conn:
            await advance_offsets(conn, "g", [OffsetAdvance("t", p, 5, 7) for p in range(3)])
    async with db.connect() as conn:  # nothing of the fenced batch stayed
        stored = await load_offsets(conn, "g", [("t", p) for p in range(3)])
    assert stored == {("t", 0): 5, ("t", 1): 9, ("t", 2): 5}


async def test_the_loop_connection_runs_the_session_statements(db: AsyncEngine) -> None:
    seen: list[str] = []

    async def handler(conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        seen.append((await conn.execute(text("SHOW plan_cache_mode"))).scalar_one())
        return BatchResult(applied=len(records))

    loop = _loop(db, handler, session=FRESH_PLANS)
    await loop._apply_with_retry(_records(per_partition=1))
    await loop.close_connection()
    assert seen == ["force_custom_plan"]
    async with db.connect() as conn:  # the pool's connections never carry them
        assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "auto"


async def test_a_conflict_is_retried_at_once_and_committed_runs_only_after_the_commit(
    db: AsyncEngine,
) -> None:
    calls: list[str] = []

    async def handler(conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS lane_marks (n int)"))
        await conn.execute(text("INSERT INTO lane_marks VALUES (1)"))
        calls.append("apply")
        if calls.count("apply") == 1:
            raise Conflict("a row changed since read")

        def committed() -> None:
            calls.append("committed")

        return BatchResult(applied=len(records), committed=committed)

    # a backoff this long would outlast the test: the first conflict must not wait for it
    loop = _loop(db, handler, retry_backoff_s=3600)
    await asyncio.wait_for(loop._apply_with_retry(_records(per_partition=1)), timeout=30)
    await loop.close_connection()
    assert calls == ["apply", "apply", "committed"]
    async with db.connect() as conn:  # the conflicted attempt rolled back whole
        assert (await conn.execute(text("SELECT count(*) FROM lane_marks"))).scalar_one() == 1
        await conn.execute(text("DROP TABLE lane_marks"))
        await conn.commit()
        stored = await load_offsets(conn, "g", [("t", p) for p in range(PARTITIONS)])
    assert stored == {("t", p): 1 for p in range(PARTITIONS)}


async def test_committed_is_not_called_when_the_commit_fails(db: AsyncEngine) -> None:
    called: list[bool] = []

    async def handler(conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        # deferred: the violation surfaces at COMMIT, after the handler returned
        await conn.execute(
            text(
                "CREATE TEMP TABLE IF NOT EXISTS deferred (n int UNIQUE DEFERRABLE INITIALLY "
                "DEFERRED)"
            )
        )
        await conn.execute(text("INSERT INTO deferred VALUES (1), (1)"))
        return BatchResult(applied=len(records), committed=lambda: called.append(True))

    loop = _loop(db, handler)
    with pytest.raises(Exception, match="deferred"):
        await loop._apply(_records(per_partition=1))
    await loop.close_connection()
    assert called == []
