"""The closed-day cache on real Postgres: a window read twice gives the same inputs from the
cache, and a late write into a cached (closed) day is seen on the next read, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clm_common.db import create_engine
from clm_metrics import repository, service
from clm_metrics.buckets import BucketKey, SketchKey
from clm_metrics.closed_days import ClosedDayCache


async def test_a_late_write_into_a_cached_day_is_read_again(database_url: str) -> None:
    now = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)
    start, end = now - timedelta(days=30), now.replace(second=0) + timedelta(minutes=1)
    old = datetime(2026, 11, 1, 9, 15, tzinfo=UTC)  # a whole day inside the window
    edge = start + timedelta(minutes=3)  # the leading minutes
    today = now - timedelta(minutes=5)
    engine = create_engine(database_url, pool_size=2)
    cache = ClosedDayCache()
    try:
        async with engine.begin() as conn:
            await repository.add_to_buckets(
                conn,
                {
                    BucketKey(old, "events", "shop", "email", ""): Decimal(3),
                    BucketKey(edge, "events", "shop", "email", ""): Decimal(2),
                    BucketKey(today, "events", "shop", "email", ""): Decimal(1),
                },
            )
            await repository.add_to_sketches(
                conn, {SketchKey(old, "visitors", "shop", "email"): {"a", "b"}}
            )

        async def read() -> tuple[Decimal, int | None]:
            inputs = await service.window_inputs(engine, start, end, now, cache=cache)
            return inputs.totals[("events", "shop", "email", "")], inputs.distinct["visitors"]

        assert await read() == (Decimal(6), 2)
        assert await read() == (Decimal(6), 2)  # from the cache: the same
        async with engine.begin() as conn:  # late events for the cached day
            await repository.add_to_buckets(
                conn, {BucketKey(old, "events", "shop", "email", ""): Decimal(10)}
            )
            await repository.add_to_sketches(
                conn, {SketchKey(old, "visitors", "shop", "email"): {"c"}}
            )
        assert await read() == (Decimal(16), 3)
        uncached = await service.window_inputs(engine, start, end, now)
        assert uncached.totals[("events", "shop", "email", "")] == Decimal(16)
        assert uncached.distinct["visitors"] == 3
    finally:
        await engine.dispose()
