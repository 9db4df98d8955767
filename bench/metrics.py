"""KPI latency against history size: ``GET /v1/kpis?window=30d`` p50/p99 on a small and a
large history side by side, through the real metrics service processes over HTTP.

Both histories are generated journeys replayed by the stage reducer, spread over two years,
turned into the stage engine's lifecycle records and loaded by :mod:`bench.metrics_load` (the
rows the write path would produce, summed in memory by the service's own pure code and
``COPY``-ed; a test checks they equal the write path's) into two databases, by ``WRITERS``
processes. Minute and hour rows are not pruned (the services' retention is set past two
years), the worst case for index depth. Then one metrics service per database, and the requests
alternate between them, so the machine's noise falls on both alike.

Sizes: ``BENCH_METRICS_SMALL_CUSTOMERS`` (default 1 600 ≈ 10k events) and
``BENCH_METRICS_LARGE_CUSTOMERS`` (default 120 000 ≈ 0.75M events: generating and replaying
the journeys costs ~0.35 ms an event of CPU, so the issue's 1M customers / 10M events would
take ~30 min of both cores to generate alone).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench.databases import create_migrated_database, drop_database, plain_url
from bench.metrics_load import History, finish, prepare, write_part
from bench.results import write_section
from clm_cli.simulator.journeys import generate
from clm_common.db import create_engine
from clm_common.keys import store_key
from clm_devstack.services import ServiceProcess, start_service
from tests.e2e.conftest import free_port
from tests.kpi_truth import record, replay

TOKEN = "bench-read-token"  # noqa: S105 - a token created in a throwaway database
REQUESTS = 300
WARMUP = 20
CHUNK = 2500  # customers generated and replayed at a time
FLUSH = 8  # chunks a loader process sums in memory before it copies them out
WRITERS = int(os.environ.get("BENCH_METRICS_WRITERS", "2"))  # parallel loading processes


@dataclass(frozen=True)
class Run:
    label: str
    customers: int
    events: int
    load_s: float
    finish_s: float
    minute_rows: int
    rollup_rows: int
    sketch_rows: int
    p50_ms: float
    p99_ms: float


async def _load_part(url: str, customers: int, now: datetime, chunks: list[int]) -> int:
    """Generate, replay and sum the given chunks of customers; copy every ``FLUSH`` chunks."""
    conn = await asyncpg.connect(plain_url(url))
    events = 0
    try:
        history = History()
        for n, chunk in enumerate(chunks, 1):
            first = chunk * CHUNK
            docs = generate(
                1000 + chunk, customers=min(CHUNK, customers - first), now=now, days=730
            )
            events += history.add(record(step) for step in replay(docs, now=now))
            if n % FLUSH == 0 or n == len(chunks):
                await write_part(conn, history)
                history = History()
    finally:
        await conn.close()
    return events


def _loader(url: str, customers: int, now: datetime, chunks: list[int]) -> int:
    return asyncio.run(_load_part(url, customers, now, chunks))


async def load(url: str, customers: int, now: datetime) -> tuple[int, float]:
    """The history, chunks shared round-robin among ``WRITERS`` processes (each chunk's
    customers are disjoint), summed into the service's tables at the end; the events and the
    seconds that last step took."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        await prepare(conn)
    finally:
        await conn.close()
    chunks = list(range((customers + CHUNK - 1) // CHUNK))
    writers = max(1, min(WRITERS, len(chunks)))
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(writers, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _loader, url, customers, now, chunks[w::writers])
                for w in range(writers)
            )
        )
    finishing = time.perf_counter()
    conn = await asyncpg.connect(plain_url(url))
    try:
        await finish(conn)
    finally:
        await conn.close()
    finish_s = time.perf_counter() - finishing
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as sa_conn:
            await store_key(sa_conn, key=TOKEN, kind="read", source="bench")
    finally:
        await engine.dispose()
    return sum(done), finish_s


async def counts(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        out = [
            int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            for table in ("kpi_buckets", "kpi_rollups", "kpi_sketches")
        ]
    finally:
        await conn.close()
    return out[0], out[1], out[2]


def serve(url: str, logs: Path) -> ServiceProcess:
    tag = uuid.uuid4().hex[:8]
    env = {
        "CLM_DATABASE_URL": url,
        "CLM_TOPIC_LIFECYCLE": f"bench{tag}.lifecycle",
        "CLM_TOPIC_DLQ": f"bench{tag}.dlq",
        "CLM_METRICS_GROUP": f"bench{tag}",
        "CLM_METRICS_REFRESH_SECONDS": "3600",
        "CLM_METRICS_MINUTE_RETENTION_DAYS": "1000",  # nothing pruned while measured
        "CLM_METRICS_HOUR_RETENTION_DAYS": "1000",
        "CLM_LOG_LEVEL": "WARNING",
    }
    return start_service("metrics", env, logs, free_port())


def measure(urls: list[str], logs: Path) -> list[tuple[float, float]]:
    """p50 and p99 of each service, the requests alternating between them."""
    procs = [serve(url, logs) for url in urls]
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        clients = [httpx.Client(base_url=p.base_url, headers=headers, timeout=30) for p in procs]
        took: list[list[float]] = [[] for _ in clients]
        for i in range(WARMUP + REQUESTS):
            for n, http in enumerate(clients):
                started = time.perf_counter()
                http.get("/v1/kpis", params={"window": "30d"}).raise_for_status()
                if i >= WARMUP:
                    took[n].append((time.perf_counter() - started) * 1000)
        for http in clients:
            http.close()
    finally:
        for p in procs:
            p.stop()
    out = []
    for ms in took:
        ms.sort()
        out.append((statistics.median(ms), ms[int(len(ms) * 0.99) - 1]))
    return out


async def run() -> list[Run]:
    now = datetime.now(UTC)
    sizes = {
        "small": int(os.environ.get("BENCH_METRICS_SMALL_CUSTOMERS", "1600")),
        "large": int(os.environ.get("BENCH_METRICS_LARGE_CUSTOMERS", "120000")),
    }
    urls = {label: await create_migrated_database(f"bench_metrics_{label}") for label in sizes}
    try:
        loaded = {}
        for label, customers in sizes.items():
            started = time.perf_counter()
            events, finish_s = await load(urls[label], customers, now)
            load_s = time.perf_counter() - started
            loaded[label] = (events, load_s, finish_s, await counts(urls[label]))
            print(
                f"bench metrics: {label}: {events} events loaded in {load_s:.0f} s "
                f"(summing the parts {finish_s:.0f} s)",
                flush=True,
            )
        with tempfile.TemporaryDirectory() as logs:
            latencies = await asyncio.to_thread(measure, list(urls.values()), Path(logs))
    finally:
        for url in urls.values():
            await drop_database(url)
    runs = []
    for (label, customers), (p50, p99) in zip(sizes.items(), latencies, strict=True):
        events, load_s, finish_s, (minute_rows, rollup_rows, sketch_rows) = loaded[label]
        print(f"bench metrics: {label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
        runs.append(
            Run(
                label,
                customers,
                events,
                load_s,
                finish_s,
                minute_rows,
                rollup_rows,
                sketch_rows,
                p50,
                p99,
            )
        )
    return runs


def report(runs: list[Run]) -> str:
    small, large = runs
    ratio = large.p99_ms / small.p99_ms
    lines = [
        "## metrics: KPI latency vs history",
        "",
        f"`GET /v1/kpis?window=30d` (every KPI, filters off) against two real metrics service "
        f"processes, one per database (small and large history), {REQUESTS} requests each after "
        f"{WARMUP} warm-up ones, alternating between them so the machine's noise falls on both "
        "alike. Two years of generated journeys, replayed by the stage reducer into the stage "
        "engine's lifecycle records, loaded by `bench/metrics_load.py`: the rows the write path "
        "would write (the service's own pure increment, rollup, sketch and cohort code, summed in "
        f"memory by {WRITERS} processes and `COPY`-ed; "
        "`tests/integration/test_metrics_bench_loader.py` checks the tables equal the write "
        "path's). Minute and hour rows unpruned. The history is spread over the same two years, "
        "so the large one is also denser: a 30-day window holds that many more events and keys.",
        "",
        "| history | customers | events | load (s) | of which summing the parts (s) | minute rows "
        "| rollup rows | sketch rows | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.customers:,} | {r.events:,} | {r.load_s:.0f} | {r.finish_s:.0f} "
            f"| {r.minute_rows:,} | {r.rollup_rows:,} | {r.sketch_rows:,} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} |"
        )
    lines += [
        "",
        f"p99 ratio large / small: **{ratio:.2f}** (target ≤ 1.5); large p99 target < 50 ms: "
        f"**{'met' if large.p99_ms < 50 else 'not met'}**. History grew "
        f"{large.events / max(small.events, 1):.0f} times.",
        "",
        "A warm request reads the closed counters (one statement: the sum of the day counters "
        "outside today and the days ahead, and of today's hour counters before the current "
        "hour), the current hour's minutes and what lies after the window (one statement), and "
        "the current hour's minute sketches; the window's closed part — its days, the leading "
        "edge, today's closed hours, their sketches and the all-time totals before the current "
        "hour — comes merged from the in-process cache while those counters are unchanged. A "
        "write into any closed day or hour (a late event) changes the counters, and the next "
        "request rebuilds the closed part, from the per-segment cache where the segment's own "
        "counters are unchanged. The window's start moves every minute, so the first request of "
        "a minute rebuilds it too (the leading minutes and the all-time totals are read again).",
    ]
    return "\n".join(lines)


def main() -> None:
    runs = asyncio.run(run())
    write_section("metrics", report(runs))
