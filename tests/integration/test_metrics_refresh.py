"""The Prometheus KPI gauges on real Postgres: recomputed when a write was counted, left as
they are (only their timestamp moves) while nothing changed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY

from clm_infra.db import create_engine
from clm_metrics import snapshot
from clm_metrics.buckets import BucketKey
from clm_metrics.repository import bucket_writes
from clm_metrics.windows import Retention


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _events_24h() -> float | None:
    return REGISTRY.get_sample_value("clm_kpi_events", {"window": "24h"})


def _refreshed() -> float:
    return REGISTRY.get_sample_value("clm_kpi_refreshed_timestamp_seconds") or 0.0


async def test_gauges_are_recomputed_only_after_a_write(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(database_url, pool_size=2)
    calls = [0]
    recompute = snapshot.refresh_gauges

    async def counted(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        await recompute(*args, **kwargs)

    monkeypatch.setattr(snapshot, "refresh_gauges", counted)

    async def write(n: int) -> None:
        at = datetime.now(UTC).replace(second=0, microsecond=0)
        async with engine.begin() as conn:
            await bucket_writes.add_counts(
                conn, {BucketKey(at, "events", "shop", "email", ""): Decimal(n)}
            )

    await write(5)
    task = asyncio.create_task(
        snapshot.refresh_forever(
            engine,
            "USD",
            0.05,
            channels=["email"],
            max_sources=10,
            retention=Retention(minute_days=92, hour_days=400),
        )
    )
    try:
        await _until(lambda: _events_24h() == 5)
        first, stamp = calls[0], _refreshed()
        await asyncio.sleep(0.5)  # ten ticks, nothing written
        assert _refreshed() > stamp  # found up to date ...
        assert calls[0] - first <= 1  # ... without recomputing (once more if a minute turned)
        await write(3)
        await _until(lambda: _events_24h() == 8)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
