"""Distinct counts on real Postgres, through the write path's sketch rows: exact up to
``hll.SPARSE_MAX`` ids in a window (whatever the rows they were written to), within the
HyperLogLog's error past it, and a row that grows past the limit keeps every id it had."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from clm_common.db import create_engine
from clm_metrics import hll, repository, service
from clm_metrics.buckets import SketchKey

NOW = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)
DAY_1 = datetime(2026, 11, 20, 9, 15, tzinfo=UTC)
DAY_2 = datetime(2026, 11, 21, 16, 40, tzinfo=UTC)


async def test_distinct_visitors_are_exact_below_the_limit_and_close_past_it(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=2)

    async def visit(at: datetime, ids: set[str], source: str = "shop") -> None:
        async with engine.begin() as conn:
            await repository.add_counts(conn, {}, {SketchKey(at, "visitors", source, "email"): ids})

    async def visitors(start: datetime, end: datetime, source: str | None = None) -> int:
        inputs = await service.window_inputs(engine, start, end, NOW, source=source)
        return inputs.distinct["visitors"] or 0

    async def row(grain: str, at: datetime) -> hll.Sketch:
        async with engine.connect() as conn:
            blob = await conn.scalar(
                text(
                    "SELECT registers FROM kpi_sketches WHERE grain = :g AND bucket_start = "
                    "date_trunc(:g, CAST(:b AS timestamptz)) AND metric = 'visitors' "
                    "AND source = :any AND channel = :any"
                ),
                {"g": grain, "b": at, "any": repository.ANY},
            )
        return hll.loads(blob)

    try:
        first = {f"v{i}" for i in range(700)}
        second = {f"v{i}" for i in range(670, 970)}  # 30 seen in the first
        await visit(DAY_1, first)
        await visit(DAY_1 + timedelta(minutes=1), second, source="app")
        day_1 = (
            DAY_1.replace(hour=0, minute=0),
            DAY_1.replace(hour=0, minute=0) + timedelta(days=1),
        )
        assert await visitors(*day_1) == 970  # exact, over two sources and two minutes
        assert await visitors(*day_1, source="shop") == 700
        assert (await row("day", DAY_1)).exact

        await visit(DAY_1, {f"v{i}" for i in range(950, 1100)})  # 130 new: 1,100 that day
        day_row = await row("day", DAY_1)
        assert not day_row.exact  # past the limit: registers, with every id it had
        assert day_row == hll.add(hll.empty(), (f"v{i}" for i in range(1100)))
        assert abs(await visitors(*day_1) - 1100) <= 22

        await visit(DAY_2, {f"w{i}" for i in range(200)} | {f"v{i}" for i in range(100)})
        window = (NOW - timedelta(days=7), NOW)
        assert abs(await visitors(*window) - 1300) <= 26
        assert await visitors(DAY_2 - timedelta(hours=1), DAY_2 + timedelta(hours=1)) == 300
    finally:
        await engine.dispose()
