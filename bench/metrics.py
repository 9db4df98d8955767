"""KPI latency against history size: ``GET /v1/kpis?window=30d`` p50/p99 on a small and a
large history side by side, through the real metrics service processes over HTTP.

Both histories are generated journeys replayed by the stage reducer, spread over two years,
turned into the stage engine's lifecycle records and loaded by :mod:`bench.metrics_load` (the
rows the write path would produce: the records counted by the service's own pure code in
``WRITERS`` processes, the parts summed in Postgres; a test checks the tables equal the write
path's) into two databases. A built history is kept in ``.cache/bench-metrics/`` (binary
``COPY`` of the tables, keyed by the size, the day and a hash of the code that built it), so a
rerun the same day only loads it. Minute and hour rows are not pruned (the services' retention
is set past two years), the worst case for index depth. Then one metrics service per database,
and the requests alternate between them, so the machine's noise falls on both alike.

Sizes: ``BENCH_METRICS_SMALL_CUSTOMERS`` (default 1 600 ≈ 10k events) and
``BENCH_METRICS_LARGE_CUSTOMERS`` (default 120 000 ≈ 0.74M events; 1 650 000 ≈ 10.2M events,
the issue's size: generating, replaying and counting the journeys costs ~0.15 ms of CPU an
event, ~25 min of both cores for 10M before Postgres sums them; a rerun from the cache only
loads the tables). ``BENCH_METRICS_WRITERS``: loading processes (2). ``BENCH_METRICS_CACHE=0``:
keep nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

import clm_domain.customer_state
import clm_domain.event_fields
import clm_domain.event_properties
import clm_domain.events
import clm_domain.lifecycle
import clm_domain.reducer
import clm_domain.rules
import clm_domain.stages
import clm_metrics.buckets
import clm_metrics.cohorts
import clm_metrics.distinct
import clm_metrics.members
import clm_metrics.repository.activity_writes
import clm_metrics.repository.bucket_writes
import clm_metrics.repository.distinct_writes
import clm_metrics.repository.rows
import clm_metrics.tickets
import clm_metrics.windows
import clm_stage_engine.records
from bench import metrics_load
from bench.databases import ROOT, create_migrated_database, drop_database, plain_url
from bench.metrics_load import (
    History,
    add_key,
    cleanup,
    drop_keys,
    dropped_keys,
    finish,
    partitions,
    prepare,
    sum_buckets,
    write_distinct,
    write_part,
)
from bench.results import write_section
from clm_devstack.services import ServiceProcess, start_service
from clm_infra.db import create_engine
from clm_infra.keys import store_key
from clm_infra.replay import METRICS_DERIVED
from clm_metrics.settings import MetricsSettings
from clm_simulator import journeys, kpi_acquisition, kpi_customers, truth, window
from clm_simulator import replay as replaying
from clm_simulator.journeys import generate
from tests import kpi_truth
from tests.e2e.conftest import free_port
from tests.kpi_truth import record, replay

TOKEN = "bench-read-token"  # noqa: S105 - a token created in a throwaway database
REQUESTS = 300
WARMUP = 20
CHUNK = 2500  # customers generated and replayed at a time
FLUSH = 8  # chunks a loader process sums in memory before it copies them out
SMALL, LARGE = 1600, 120_000  # customers: ~10k and ~0.75M events
WRITERS = int(os.environ.get("BENCH_METRICS_WRITERS", "2"))  # parallel loading processes
DAYS = 730  # the histories span two years, up to the start of today (UTC)
CACHE = ROOT / ".cache" / "bench-metrics"
CACHE_KEEP = os.environ.get("BENCH_METRICS_CACHE", "1") != "0"


@dataclass(frozen=True)
class Loaded:
    events: int
    load_s: float  # this run's
    build_s: float  # generating, replaying, summing and loading (this run's or the cached one's)
    finish_s: float  # of which summing the parts
    cached: bool


@dataclass(frozen=True)
class Grain:
    """One grain's Roaring bitmaps in ``kpi_distinct``: rows, the bitmaps' own bytes, the days
    they cover, and the bytes of the mean, median and largest day, and of the last 30 days'
    mean (the newest days hold the most customers)."""

    grain: str
    rows: int
    payload: int
    days: int
    mean_day: float
    median_day: float
    max_day: int
    last30_day: float


@dataclass(frozen=True)
class Storage:
    """What the distinct sets of a history take in Postgres: each table's whole size (heap,
    TOAST and indexes: ``pg_total_relation_size``), and the bitmaps by grain."""

    tables: dict[str, int]
    grains: list[Grain]


#: The tables the exact distinct sets live in: the bitmaps, the days each customer number is
#: in a set of (for erasures and merges), and the ids' numbers.
BITMAP_TABLES = ("kpi_distinct", "metrics_customer_days", "metrics_customer_numbers")


async def storage(url: str) -> Storage:
    """The bitmaps' bytes per UTC day and grain, and the bitmap tables' sizes."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        tables = {
            t: int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t))
            for t in BITMAP_TABLES
        }
        days = await conn.fetch(
            "SELECT grain, (bucket_start AT TIME ZONE 'UTC')::date AS day, count(*) AS n, "
            "sum(octet_length(members)) AS bytes FROM kpi_distinct GROUP BY 1, 2"
        )
    finally:
        await conn.close()
    by_grain: dict[str, list[tuple[Any, int, int]]] = {}
    for row in days:
        by_grain.setdefault(row["grain"], []).append((row["day"], row["n"], int(row["bytes"])))
    grains = []
    for grain in ("minute", "hour", "day"):
        rows = sorted(by_grain.get(grain, []))
        sizes = [b for _, _, b in rows] or [0]
        last = sizes[-30:]
        grains.append(
            Grain(
                grain,
                sum(n for _, n, _ in rows),
                sum(sizes),
                len(rows),
                statistics.fmean(sizes),
                statistics.median(sizes),
                max(sizes),
                statistics.fmean(last),
            )
        )
    return Storage(tables, grains)


@dataclass(frozen=True)
class Run:
    label: str
    customers: int
    loaded: Loaded
    minute_rows: int
    rollup_rows: int
    distinct_rows: int
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
                1000 + chunk, customers=min(CHUNK, customers - first), now=now, days=DAYS
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


async def _distinct_part(url: str, partition: str) -> int:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return await write_distinct(conn, partition)
    finally:
        await conn.close()


def _distinct_writer(url: str, partition: str) -> int:
    return asyncio.run(_distinct_part(url, partition))


async def _on_connection(url: str, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        await work(conn)
    finally:
        await conn.close()


async def _keyed(url: str, table: str, name: str, definition: str) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        await add_key(conn, table, name, definition)
    finally:
        await conn.close()


async def build(url: str, customers: int, now: datetime) -> tuple[int, float]:
    """The history, chunks shared round-robin among ``WRITERS`` processes (each chunk's
    customers are disjoint); then summed into the service's tables month by month, the
    buckets and rollups on ``WRITERS`` connections while ``WRITERS`` processes build the
    distinct bitmaps; then the keys, side by side. The events and the seconds the summing took."""
    start, end = (now - timedelta(days=DAYS)).date(), now.date()
    await _on_connection(url, lambda conn: prepare(conn, start, end))
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
        months = partitions(start, end)
        queue = list(months)

        async def buckets(conn: asyncpg.Connection) -> None:
            while queue:
                await sum_buckets(conn, queue.pop())

        await asyncio.gather(
            *(_on_connection(url, buckets) for _ in range(writers)),
            *(loop.run_in_executor(pool, _distinct_writer, url, month) for month in months),
        )
    conn = await asyncpg.connect(plain_url(url))
    try:
        await finish(conn)
        keys = await dropped_keys(conn)
        await asyncio.gather(*(_keyed(url, *key) for key in keys))
        await cleanup(conn)
    finally:
        await conn.close()
    return sum(done), time.perf_counter() - finishing


#: The service's tables a loaded history fills (what the cache keeps): all it derives.
TABLES = METRICS_DERIVED
#: The code a cached history depends on: the generator, the reducer, the records, the
#: service's pure counting code, this loader and the schema.
SOURCES = (
    journeys,
    replaying,
    window,
    kpi_acquisition,
    kpi_customers,
    truth,
    kpi_truth,
    clm_domain.events,
    clm_domain.event_fields,
    clm_domain.event_properties,
    clm_domain.lifecycle,
    clm_domain.stages,
    clm_domain.customer_state,
    clm_domain.reducer,
    clm_domain.rules,
    clm_stage_engine.records,
    clm_metrics.buckets,
    clm_metrics.members,
    clm_metrics.cohorts,
    clm_metrics.distinct,
    clm_metrics.repository.rows,
    clm_metrics.repository.bucket_writes,
    clm_metrics.repository.distinct_writes,
    clm_metrics.repository.activity_writes,
    clm_metrics.tickets,
    clm_metrics.windows,
    metrics_load,
)


def cache_dir(customers: int, now: datetime) -> Path:
    """Where a history of these parameters, built by this code, is kept."""
    digest = hashlib.sha256()
    digest.update(f"{customers}|{now.isoformat()}|{DAYS}|{CHUNK}|seed 1000+chunk".encode())
    files = [Path(m.__file__ or "") for m in SOURCES]
    files += sorted((ROOT / "migrations" / "versions").glob("*.py"))
    for path in files:
        digest.update(path.read_bytes())
    return CACHE / f"{customers}-{now:%Y%m%d}-{digest.hexdigest()[:16]}"


async def _copy_table(url: str, table: str, path: Path, *, out: bool) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        if out:
            await conn.copy_from_table(table, output=str(path), format="binary")
        else:
            await conn.copy_to_table(table, source=str(path), format="binary")
    finally:
        await conn.close()


async def save(url: str, where: Path, meta: dict[str, Any]) -> None:
    """Keep the loaded tables (binary ``COPY``) for a rerun; older histories are removed."""
    partial = where.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    await asyncio.gather(*(_copy_table(url, t, partial / f"{t}.copy", out=True) for t in TABLES))
    (partial / "meta.json").write_text(json.dumps(meta))
    partial.rename(where)


async def restore(url: str, where: Path) -> dict[str, Any]:
    """Copy a kept history into the tables (their keys built after); what it says of itself."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        keys = await drop_keys(conn)
        await asyncio.gather(*(_copy_table(url, t, where / f"{t}.copy", out=False) for t in TABLES))
        await asyncio.gather(*(_keyed(url, *key) for key in keys))
        # the copied numbers were not drawn from the sequence: new customers continue after them
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('metrics_customer_numbers', 'number'), "
            "coalesce(max(number), 0) + 1, false) FROM metrics_customer_numbers"
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    meta: dict[str, Any] = json.loads((where / "meta.json").read_text())
    return meta


async def load(url: str, customers: int, now: datetime) -> Loaded:
    """The history in the database: from the cache when kept, else built (:func:`keep`)."""
    where = cache_dir(customers, now)
    started = time.perf_counter()
    if (where / "meta.json").exists():
        meta = await restore(url, where)
        loaded = Loaded(
            meta["events"],
            time.perf_counter() - started,
            meta["build_s"],
            meta["finish_s"],
            cached=True,
        )
    else:
        events, finish_s = await build(url, customers, now)
        build_s = time.perf_counter() - started
        loaded = Loaded(events, build_s, build_s, finish_s, cached=False)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as sa_conn:
            await store_key(sa_conn, key=TOKEN, kind="read", source="bench")
    finally:
        await engine.dispose()
    return loaded


async def keep(url: str, customers: int, now: datetime, loaded: Loaded) -> None:
    """Keep a built history for a rerun (this size's older ones removed); a failure to keep
    it only warns."""
    if loaded.cached or not CACHE_KEEP:
        return
    for old in CACHE.glob(f"{customers}-*"):
        shutil.rmtree(old, ignore_errors=True)
    meta = {"events": loaded.events, "build_s": loaded.build_s, "finish_s": loaded.finish_s}
    try:
        await save(url, cache_dir(customers, now), meta)
    except OSError as exc:
        print(f"bench metrics: could not keep the history: {exc}", flush=True)


async def counts(url: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        out = [
            int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            for table in ("kpi_buckets", "kpi_rollups", "kpi_distinct")
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
        "CLM_METRICS_REFRESH_S": "3600",
        "CLM_METRICS_MINUTE_RETENTION_DAYS": "1000",  # nothing pruned while measured
        "CLM_METRICS_HOUR_RETENTION_DAYS": "1000",
        "CLM_LOG_LEVEL": "WARNING",
        "CLM_RATE_LIMIT_KEY_PER_S": "0",  # one client at full speed: not the limits measured
        "CLM_RATE_LIMIT_ADDRESS_PER_S": "0",
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


def _load_avg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


async def run() -> tuple[list[Run], dict[str, str], Storage]:
    # the start of today: one history a day for the cache; the window's last hours are empty
    # for both histories alike
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sizes = {
        "small": int(os.environ.get("BENCH_METRICS_SMALL_CUSTOMERS", str(SMALL))),
        "large": int(os.environ.get("BENCH_METRICS_LARGE_CUSTOMERS", str(LARGE))),
    }
    loads = {"start": _load_avg()}
    urls = {label: await create_migrated_database(f"bench_metrics_{label}") for label in sizes}
    try:
        loaded = {}
        for label, customers in sizes.items():
            done = await load(urls[label], customers, now)
            loaded[label] = (done, await counts(urls[label]))
            how = "from the cache" if done.cached else "built"
            print(
                f"bench metrics: {label}: {done.events} events {how} in {done.load_s:.0f} s "
                f"(built in {done.build_s:.0f} s, summing the parts {done.finish_s:.0f} s); "
                f"load average {_load_avg()}",
                flush=True,
            )
        loads["loaded"] = _load_avg()
        with tempfile.TemporaryDirectory() as logs:
            latencies = await asyncio.to_thread(measure, list(urls.values()), Path(logs))
        loads["measured"] = _load_avg()
        stored = await storage(urls["large"])
        for label, customers in sizes.items():
            await keep(urls[label], customers, now, loaded[label][0])
    finally:
        for url in urls.values():
            await drop_database(url)
    runs = []
    for (label, customers), (p50, p99) in zip(sizes.items(), latencies, strict=True):
        done, (minute_rows, rollup_rows, distinct_rows) = loaded[label]
        print(f"bench metrics: {label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
        runs.append(Run(label, customers, done, minute_rows, rollup_rows, distinct_rows, p50, p99))
    return runs, loads, stored


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _kb(n: float) -> str:
    return f"{n / 1e3:,.1f}"


def storage_report(large: Run, stored: Storage) -> list[str]:
    """The bitmaps' bytes per day of the large history, and what the defaults' retention keeps."""
    grains = {g.grain: g for g in stored.grains}
    defaults = MetricsSettings.model_fields
    minute = defaults["metrics_minute_retention_days"].default
    hour = defaults["metrics_hour_retention_days"].default
    kept = (
        grains["minute"].last30_day * minute
        + grains["hour"].last30_day * hour
        + grains["day"].last30_day * DAYS
    )
    payload = sum(g.payload for g in stored.grains)
    table = stored.tables["kpi_distinct"]
    lines = [
        "",
        f"### Distinct-set storage at {large.customers:,} customers ({large.loaded.events:,} "
        "events)",
        "",
        "The exact distinct sets (unique visitors, purchasing customers, repeat purchasers, by "
        "source and channel and for any) are Roaring bitmaps of dense customer numbers in "
        "`kpi_distinct.members`, one row a grain, bucket, metric and source/channel. The "
        "bitmaps' own bytes (`sum(octet_length(members))`) by UTC day of the bucket and grain; "
        "the last 30 days' mean is the window a KPI request reads:",
        "",
        "| grain | rows | bitmap bytes (MB) | days | mean a day (kB) | median a day (kB) | "
        "largest day (kB) | last 30 days' mean a day (kB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in stored.grains:
        lines.append(
            f"| {g.grain} | {g.rows:,} | {_mb(g.payload)} | {g.days} | {_kb(g.mean_day)} "
            f"| {_kb(g.median_day)} | {_kb(g.max_day)} | {_kb(g.last30_day)} |"
        )
    lines += [
        "",
        "| table (`pg_total_relation_size`: heap, TOAST, indexes) | MB | a day of the "
        f"{DAYS}-day history (kB) |",
        "|---|---:|---:|",
    ]
    for name, size in stored.tables.items():
        lines.append(f"| `{name}` | {_mb(size)} | {_kb(size / DAYS)} |")
    lines += [
        "",
        f"Bitmap storage: **{_kb(table / DAYS)} kB a day** of `kpi_distinct` on average over "
        f"the {DAYS} days ({_kb(payload / DAYS)} kB of it the bitmaps themselves; "
        f"{table / max(payload, 1):.2f} × for row headers, keys, TOAST and the primary key), "
        f"with every grain kept, as this bench keeps them. At the services' default retention "
        f"({minute} days of minutes, {hour} of hours, days for ever) and the last 30 days' "
        f"rate, the bitmaps would hold about {_mb(kept)} MB after {DAYS} days. The customer "
        "numbers grow with the customers, not the days; the customer-days table by one row "
        "a customer and active day.",
    ]
    return lines


def report(runs: list[Run], loads: dict[str, str], stored: Storage) -> str:
    small, large = runs
    ratio = large.p99_ms / small.p99_ms
    lines = [
        "## metrics: KPI latency vs history",
        "",
        f"`GET /v1/kpis?window=30d` (every KPI, filters off) against two real metrics service "
        f"processes, one per database (small and large history), {REQUESTS} requests each after "
        f"{WARMUP} warm-up ones, alternating between them so the machine's noise falls on both "
        "alike. Minute and hour rows unpruned. The history is spread over the same two years, "
        "so the large one is also denser: a 30-day window holds that many more events and keys.",
        "",
        "How the histories were built (`bench/metrics_load.py`): journeys of "
        f"{CHUNK:,} customers at a time from the seeded generator (`clm simulate`'s), "
        f"over the {DAYS} days up to the start of today (UTC), each chunk's events validated as "
        "the ingest does and replayed by the stage reducer, each applied event turned into the "
        "stage engine's `clm.lifecycle.v1` record (serialized and parsed, as the metrics "
        "consumer gets it), and each record counted by the metrics service's own pure code "
        "(increments, distinct-set ids, Roaring bitmap encoding, cohort activity, stage "
        f"deltas) in {WRITERS} processes that `COPY` their sums; Postgres sums the parts and "
        "derives the hour, day and all-time rollups and the distinct bitmaps' hour, day and "
        "any-source/any-channel rows the way the service spreads them. "
        "`tests/integration/test_metrics_bench_loader.py` checks that the tables equal what "
        "the write path (`LifecycleHandler`, batch by batch) writes for the same records. A "
        "built history is kept under `.cache/bench-metrics/` (binary `COPY` of the tables, "
        "keyed by the sizes, the day and a hash of the code that built it), so a rerun the "
        "same day only loads it.",
        "",
        "| history | customers | events | load (s) | built in (s) | of which summing the parts "
        "(s) | minute rows | rollup rows | distinct rows | p50 (ms) | p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        d = r.loaded
        load = f"{d.load_s:.0f}" + (" (cache)" if d.cached else "")
        lines.append(
            f"| {r.label} | {r.customers:,} | {d.events:,} | {load} | {d.build_s:.0f} "
            f"| {d.finish_s:.0f} | {r.minute_rows:,} | {r.rollup_rows:,} | {r.distinct_rows:,} "
            f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} |"
        )
    lines += [
        "",
        f"p99 ratio large / small: **{ratio:.2f}** (target ≤ 1.5); large p99 target < 50 ms: "
        f"**{'met' if large.p99_ms < 50 else 'not met'}**. History grew "
        f"{large.loaded.events / max(small.loaded.events, 1):.0f} times. The box's load "
        f"average (1 / 5 / 15 min) on 2 cores: {loads['start']} at the start, "
        f"{loads['loaded']} once loaded, {loads['measured']} after the requests.",
        "",
        "A warm request reads the closed counters (one statement: the sum of the day counters "
        "outside today and the days ahead, and of today's hour counters before the current "
        "hour), the current hour's minutes and what lies after the window (one statement), and "
        "the current hour's minute bitmaps; the window's closed part — its days, the leading "
        "edge, today's closed hours, their bitmaps and the all-time totals before the current "
        "hour — comes merged from the in-process cache while those counters are unchanged. A "
        "write into any closed day or hour (a late event) changes the counters, and the next "
        "request rebuilds the closed part, from the per-segment cache where the segment's own "
        "counters are unchanged. The window's start moves every minute, so the first request of "
        "a minute rebuilds it too (the leading minutes and the all-time totals are read again).",
    ]
    lines += storage_report(large, stored)
    return "\n".join(lines)


def main() -> None:
    runs, loads, stored = asyncio.run(run())
    write_section("metrics", report(runs, loads, stored))
