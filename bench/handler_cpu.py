"""The metrics handler's CPU per lifecycle record, on this checkout: for comparing two commits
back to back on one machine (run it in each checkout, alternating, a few times).

``python -m bench.handler_cpu [SEEDS]`` (with ``CLM_TEST_PG_ADMIN_URL`` or
``CLM_DATABASE_URL`` set): journeys of 250 customers per seed over 60 days from the seeded
generator, turned into the stage engine's lifecycle records, fed to a fresh
``LifecycleHandler`` in batches of 200 (one transaction each) on a new migrated database; prints
the Python process's CPU time (not Postgres') and the wall time per record.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from bench.databases import create_migrated_database, drop_database
from clm_cli.simulator.journeys import generate
from clm_common.db import create_engine
from clm_metrics.handler import LifecycleHandler
from tests.kpi_truth import record, replay

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BATCH = 200


@dataclass(frozen=True)
class Record:
    value: bytes
    topic: str = "clm.lifecycle.v1"
    partition: int = 0
    offset: int = 0


async def measure(seeds: int) -> tuple[int, float, float]:
    """Records, CPU µs and wall µs per record."""
    values = [
        orjson.dumps(record(step))
        for seed in range(seeds)
        for step in replay(generate(seed, customers=250, now=NOW, days=60), now=NOW)
    ]
    url = await create_migrated_database("bench_handler_cpu")
    engine = create_engine(url, pool_size=1)
    try:
        handler = LifecycleHandler()
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(0, len(values), BATCH):
            async with engine.begin() as conn:
                await handler(conn, [Record(v) for v in values[i : i + BATCH]])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await engine.dispose()
        await drop_database(url)
    return len(values), cpu / len(values) * 1e6, wall / len(values) * 1e6


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    n, cpu, wall = asyncio.run(measure(seeds))
    print(f"records={n} cpu_us_per_record={cpu:.1f} wall_us_per_record={wall:.1f}")


if __name__ == "__main__":
    main()
