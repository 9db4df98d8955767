"""The retention policy on real Postgres: old minute rows go, hours and days stay, and a range
reaching into the pruned past is widened to the hour and still sums exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from clm_infra.db import create_engine
from clm_metrics.buckets import BucketKey
from clm_metrics.repository import bucket_writes, pruning, reads
from clm_metrics.windows import Retention, plan


async def test_pruned_minutes_leave_exact_hour_aligned_ranges(database_url: str) -> None:
    now = datetime(2026, 11, 23, 12, 34, tzinfo=UTC)
    old = datetime(2026, 6, 1, 10, 17, tzinfo=UTC)  # beyond 92 days of minutes
    recent = now - timedelta(minutes=30)
    incs = {
        BucketKey(old, "events", "shop", "email", ""): Decimal(3),
        BucketKey(old + timedelta(minutes=50), "events", "shop", "email", ""): Decimal(4),
        BucketKey(recent, "events", "shop", "email", ""): Decimal(5),
    }
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await bucket_writes.add_counts(conn, incs)
        retention = Retention(minute_days=92, hour_days=400)
        async with engine.begin() as conn:
            removed = await pruning.prune(
                conn,
                minutes_before=now - timedelta(days=92, hours=1),
                hours_before=now - timedelta(days=401),
            )
        assert removed == 2  # the two old minute rows; their hour and day rollups stay
        start = retention.align(old + timedelta(minutes=5), now)
        assert start == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
        end = now.replace(second=0) + timedelta(minutes=1)
        async with engine.connect() as conn:
            totals = await reads.range_totals(conn, plan(start, end))
            recent_only = await reads.range_totals(conn, plan(recent, end))
        assert totals == {("events", "shop", "email", ""): Decimal(12)}
        assert recent_only == {("events", "shop", "email", ""): Decimal(5)}
        assert retention.align(recent, now) == recent
        assert retention.align(now - timedelta(days=500), now).hour == 0
    finally:
        await engine.dispose()
