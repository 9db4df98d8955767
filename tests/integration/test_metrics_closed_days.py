"""The closed-day cache on real Postgres: a window read twice gives the same inputs from the
cache, and a late write into a cached (closed) day is seen on the next read, exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clm_infra.db import create_engine
from clm_metrics import service
from clm_metrics.buckets import BucketKey
from clm_metrics.closed_days import ClosedDayCache
from clm_metrics.formulas import compute_kpis
from clm_metrics.members import DistinctKey
from clm_metrics.repository import bucket_writes


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
            await bucket_writes.add_counts(
                conn,
                {
                    BucketKey(old, "events", "shop", "email", ""): Decimal(3),
                    BucketKey(edge, "events", "shop", "email", ""): Decimal(2),
                    BucketKey(today, "events", "shop", "email", ""): Decimal(1),
                },
            )
            await bucket_writes.add_counts(
                conn, {}, [(DistinctKey(old, "visitors", "shop", "email"), w) for w in "ab"]
            )

        async def read() -> tuple[Decimal, int | None]:
            inputs = await service.window_inputs(engine, start, end, now, cache=cache)
            return inputs.totals[("events", "shop", "email", "")], inputs.distinct["visitors"]

        assert await read() == (Decimal(6), 2)
        assert await read() == (Decimal(6), 2)  # from the cache: the same
        async with engine.begin() as conn:  # late events for the cached day
            await bucket_writes.add_counts(
                conn, {BucketKey(old, "events", "shop", "email", ""): Decimal(10)}
            )
            await bucket_writes.add_counts(
                conn, {}, [(DistinctKey(old, "visitors", "shop", "email"), "c")]
            )
        assert await read() == (Decimal(16), 3)
        uncached = await service.window_inputs(engine, start, end, now)
        assert uncached.totals[("events", "shop", "email", "")] == Decimal(16)
        assert uncached.distinct["visitors"] == 3
    finally:
        await engine.dispose()


async def test_late_writes_into_cached_hours_and_outside_the_window_are_read_again(
    database_url: str,
) -> None:
    """Today's closed hours and the all-time totals before the current hour are cached too:
    a late event in a closed hour of today, or in a day long before the window (its flows move
    the stage counts, its revenue the historical CLV), changes the next answer, which equals
    an uncached read's."""
    now = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)
    start, end = now - timedelta(days=30), now.replace(second=0) + timedelta(minutes=1)
    morning = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)  # a closed hour of today
    current = datetime(2026, 11, 23, 12, 5, tzinfo=UTC)  # the open hour
    long_ago = datetime(2026, 8, 1, 8, 0, tzinfo=UTC)  # before the window
    key = ("shop", "email", "")
    engine = create_engine(database_url, pool_size=2)
    cache = ClosedDayCache()

    async def write(
        at: datetime, metric: str, value: int, ids: set[str] | None = None, currency: str = ""
    ) -> None:
        async with engine.begin() as conn:
            await bucket_writes.add_counts(
                conn, {BucketKey(at, metric, "shop", "email", currency): Decimal(value)}
            )
            if ids:
                await bucket_writes.add_counts(
                    conn, {}, [(DistinctKey(at, "visitors", "shop", "email"), w) for w in ids]
                )

    async def read() -> dict[str, object]:
        cached = await service.window_inputs(engine, start, end, now, cache=cache)
        uncached = await service.window_inputs(engine, start, end, now)
        got = compute_kpis(cached, reporting_currency="USD")
        assert got == compute_kpis(uncached, reporting_currency="USD")
        return {
            "events": cached.totals.get(("events", *key), Decimal(0)),
            "visitors": cached.distinct["visitors"],
            "customers": got["customers_by_stage"],
            "revenue": cached.all_time.get(("customer_revenue", "shop", "email", "USD")),
        }

    try:
        await write(long_ago, "flow::acquisition", 2)
        await write(morning, "events", 3, {"a", "b"})
        await write(current, "events", 1, {"c"})
        first = await read()
        assert (first["events"], first["visitors"]) == (Decimal(4), 3)
        assert first["customers"]["acquisition"] == 2  # type: ignore[index]
        assert await read() == first  # from the cache: the same

        await write(morning.replace(minute=40), "events", 10, {"d"})  # late, in a cached hour
        second = await read()
        assert (second["events"], second["visitors"]) == (Decimal(14), 4)

        await write(long_ago, "flow:acquisition:conversion", 1)  # late, long before the window
        await write(long_ago, "customer_revenue", 25, currency="USD")
        third = await read()
        assert third["customers"]["acquisition"] == 1  # type: ignore[index]
        assert third["customers"]["conversion"] == 1  # type: ignore[index]
        assert third["revenue"] == Decimal(25)

        await write(current.replace(minute=20), "events", 5)  # the open hour: read afresh
        assert (await read())["events"] == Decimal(19)
    finally:
        await engine.dispose()
