"""The stage engine handler's CPU per event, on this checkout: for comparing two versions of
the reducer back to back on one machine (run it in each, alternating, a few times).

``python -m bench.engine_cpu [CUSTOMERS]`` (with ``CLM_TEST_PG_ADMIN_URL`` or
``CLM_DATABASE_URL`` set): the journeys of that many customers (2,500) over 60 days from the
seeded generator (seed 0), in event-time order, encoded as the ingest publishes them and fed to a fresh
``EventsHandler`` (with its memory of the rows it wrote, as the service runs it) in batches
of 2,000 (one transaction each) on a new migrated database. Prints the Python process's CPU
time per event (not Postgres'), the wall time per event and, of the CPU time, what the
handler's pure fold took (the reducer and the lifecycle records it makes).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from bench.databases import create_migrated_database, drop_database
from clm_domain.events import dump_event, parse_event
from clm_domain.rules import LifecycleRules
from clm_infra.db import create_engine
from clm_simulator.journeys import generate
from clm_stage_engine import handler as handler_module
from clm_stage_engine import processor
from clm_stage_engine.handler import EventsHandler
from clm_stage_engine.known import KnownStates

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BATCH = 2000


@dataclass(frozen=True)
class Record:
    value: bytes
    topic: str = "clm.events.v1"
    partition: int = 0
    offset: int = 0


class _TimedFold:
    """``processor.fold`` as the handler calls it, adding up the CPU time it takes."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return processor.fold(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - start


async def measure(customers: int) -> tuple[int, float, float, float]:
    """Events, CPU µs, wall µs and fold CPU µs per event."""
    events = [
        parse_event(doc, now=NOW) for doc in generate(0, customers=customers, now=NOW, days=60)
    ]
    events.sort(key=lambda e: e.occurred_at)
    values = [Record(dump_event(e), offset=n) for n, e in enumerate(events)]
    url = await create_migrated_database("bench_engine_cpu")
    engine = create_engine(url, pool_size=1)
    timed = _TimedFold()
    try:
        handler = EventsHandler("clm.lifecycle.v1", LifecycleRules(), KnownStates(100_000))
        with mock.patch.object(handler_module, "fold", timed):
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(0, len(values), BATCH):
                async with engine.begin() as conn:
                    result = await handler(conn, values[i : i + BATCH])
                if result.committed is not None:
                    result.committed()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await engine.dispose()
        await drop_database(url)
    n = len(values)
    return n, cpu / n * 1e6, wall / n * 1e6, timed.seconds / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_cpu")
    parser.add_argument("customers", nargs="?", type=int, default=2500)
    args = parser.parse_args()
    n, cpu, wall, fold = asyncio.run(measure(args.customers))
    print(
        f"events={n} cpu_us_per_event={cpu:.1f} wall_us_per_event={wall:.1f} "
        f"fold_cpu_us_per_event={fold:.1f}"
    )


if __name__ == "__main__":
    main()
