"""The batch consumer's lanes and its one-statement compare-and-set, on a real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_common.consumer import BatchConsumer, BatchPolicy, BatchResult, Conflict, Handler
from clm_common.db import create_engine
from clm_common.offsets import OffsetAdvance, OffsetFenced, advance_offsets, load_offsets
from clm_stage_engine.app import FRESH_PLANS

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


async def test_a_large_fetch_is_applied_in_lanes_side_by_side(db: AsyncEngine) -> None:
    handler = _Handler(meet=2)
    loop = _loop(db, handler, lanes=2, lane_min_records=10)
    await loop._apply_lanes(_records(per_partition=10))  # 40 records: two lanes
    await loop.close_connections()

    lanes = sorted(handler.batches, key=lambda b: min(b[0]))
    assert [parts for parts, _ in lanes] == [{0, 2}, {1, 3}]  # partition % lanes
    assert lanes[0][1] != lanes[1][1], "the lanes shared one connection"
    async with db.connect() as conn:
        stored = await load_offsets(conn, "g", [("t", p) for p in range(PARTITIONS)])
    assert stored == {("t", p): 10 for p in range(PARTITIONS)}
    assert loop.expected == stored


async def test_a_small_fetch_is_one_batch(db: AsyncEngine) -> None:
    handler = _Handler()
    loop = _loop(db, handler, lanes=2, lane_min_records=10)
    await loop._apply_lanes(_records(per_partition=2))  # 8 records: fewer than two lanes' worth
    await loop.close_connections()
    assert [parts for parts, _ in handler.batches] == [{0, 1, 2, 3}]


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


async def test_each_lane_connection_runs_the_session_statements(db: AsyncEngine) -> None:
    seen: list[str] = []

    async def handler(conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        seen.append((await conn.execute(text("SHOW plan_cache_mode"))).scalar_one())
        return BatchResult(applied=len(records))

    loop = _loop(db, handler, lanes=2, lane_min_records=10, session=FRESH_PLANS)
    await loop._apply_lanes(_records(per_partition=10))
    await loop.close_connections()
    assert seen == ["force_custom_plan", "force_custom_plan"]
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
    await asyncio.wait_for(loop._apply_with_retry(_records(per_partition=1), 0), timeout=30)
    await loop.close_connections()
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
        await loop._apply(_records(per_partition=1), 0)
    await loop.close_connections()
    assert called == []
