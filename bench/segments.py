"""Segments benchmark: what live segments cost the stage engine, how fast a backfill walks
the customers, and how long a page of a large segment's members takes.

(a) one topic pre-filled with journeys (as the stage-engine bench's) is applied by a real
    stage-engine process with 0, 10 and 50 segments defined (each run on a fresh database,
    the segments defined in SQL as the API defines them, none with a backfill pending, so
    only the live path works on them); the runs alternate their order, and each count's
    figure is the median of its runs; the batch phases' seconds
    (``clm_stage_engine_phase_seconds_total``) say where the time went;
(b) a backfill: a new segment (nine others live) evaluated over a table of customers filled
    in SQL, customers/s from the engine's own progress times;
(c) ``GET /v1/segments/{id}/members`` over HTTP, following the ``next`` cursors, with the
    customers table filled to 1M and a segment of half of them (plus closed spans).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.databases import create_migrated_database, drop_database, plain_url, postmaster_pid
from bench.http import Conn
from bench.proc import cpu_s, tree_cpu_s
from bench.reads import Reads, percentile
from bench.results import write_section
from bench.segment_defs import (
    FILL_CLOSED_SQL,
    FILL_MEMBERS_SQL,
    FILL_VARIED_SQL,
    TEMPLATES,
    define_segments,
    next_cursor,
    phase_seconds,
    segment_conditions,
)
from bench.stack import stack_env
from bench.stage_engine import Sustained, _prefilled, _sustain
from clm_devstack.services import ServiceProcess, start_service
from clm_domain.segments import dump_condition, parse_condition
from clm_infra.db import create_engine
from clm_infra.keys import store_key
from tests.e2e.conftest import free_port

EVENTS = int(os.environ.get("CLM_BENCH_SEGMENTS_EVENTS", "60000"))
COUNTS = [int(n) for n in os.environ.get("CLM_BENCH_SEGMENTS_COUNTS", "0,10,50").split(",")]
REPEATS = max(1, int(os.environ.get("CLM_BENCH_SEGMENTS_REPEATS", "3")))
WARMUPS = max(0, int(os.environ.get("CLM_BENCH_SEGMENTS_WARMUPS", "1")))
BACKFILL_CUSTOMERS = int(os.environ.get("CLM_BENCH_SEGMENTS_BACKFILL_CUSTOMERS", "200000"))
LISTING_CUSTOMERS = int(os.environ.get("CLM_BENCH_SEGMENTS_CUSTOMERS", "1000000"))
LISTING_EVERY = 2  # the listed segment holds every 2nd customer
CLOSED_EVERY = 5  # and has a closed span for every 5th (its history)
PAGES = int(os.environ.get("CLM_BENCH_SEGMENTS_PAGES", "500"))  # a round's pages
ROUNDS = int(os.environ.get("CLM_BENCH_READ_ROUNDS", "5"))
TOKEN = "bench-read"  # noqa: S105 (the read key the bench stores)
PHASES = ("decode", "dedupe", "identities", "load", "fold", "write", "segments")


@dataclass(frozen=True)
class Live:
    """A run of (a): the rate and CPU, the phases' seconds, what the segments held after."""

    segments: int
    run: Sustained
    phases: dict[str, float]
    open_spans: int
    clocks: int
    changes: int = 0  # entries and exits recorded (each one record on clm.segments.v1)


async def _metrics(port: int) -> str:
    conn = await Conn.open(port)
    try:
        status, body = await conn.fetch(b"GET /metrics HTTP/1.1\r\nHost: engine\r\n\r\n")
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    return body.decode()


async def _live_run(base: dict[str, str], total: int, count: int, db_url: str | None) -> Live:
    """Apply the pre-filled topic with ``count`` segments defined, on a fresh database (or
    ``db_url``, fresh already), with a consumer group of its own; the database dropped after."""
    db_url = db_url or await create_migrated_database("clm_bench_seg")
    env = {
        **base,
        "CLM_DATABASE_URL": db_url,
        "CLM_STAGE_ENGINE_GROUP": f"bench{uuid.uuid4().hex[:8]}.stage-engine",
    }
    conn = await asyncpg.connect(plain_url(db_url))
    try:
        await define_segments(conn, segment_conditions(count))
        run, procs = await _sustain(conn, env, total, 1)
        try:
            phases = phase_seconds(await _metrics(procs[0].port))
        finally:
            for p in procs:
                p.stop()
        open_spans = int(
            await conn.fetchval("SELECT count(*) FROM segment_memberships WHERE left_at IS NULL")
        )
        clocks = int(await conn.fetchval("SELECT count(*) FROM segment_clock"))
        changes = int(
            await conn.fetchval("SELECT count(*) + count(left_at) FROM segment_memberships")
        )
    finally:
        await conn.close()
    await drop_database(db_url)
    return Live(count, run, phases, open_spans, clocks, changes)


def median_live(runs: list[Live]) -> Live:
    """The run of median rate (the lower middle of an even count), with every run's rate."""
    ordered = sorted(runs, key=lambda r: r.run.rate)
    middle = ordered[(len(ordered) - 1) // 2]
    rates = tuple(r.run.rate for r in runs)
    return Live(
        middle.segments,
        Sustained(
            middle.run.replicas,
            middle.run.rate,
            middle.run.engine_us,
            middle.run.pg_us,
            middle.run.broker_us,
            rates,
        ),
        middle.phases,
        middle.open_spans,
        middle.clocks,
        middle.changes,
    )


def run_order(counts: list[int], repeats: int) -> list[int]:
    """The runs' segment counts: each repeat in turn forward and backward, so a drift of the
    box's speed over the runs weighs on every count alike."""
    out: list[int] = []
    for r in range(repeats):
        out += counts if r % 2 == 0 else counts[::-1]
    return out


async def live() -> list[Live]:
    """Part (a): each count's median run, in ``COUNTS`` order."""
    first = await create_migrated_database("clm_bench_seg")
    base, events = await _prefilled(first, EVENTS)
    spare: str | None = first
    for _ in range(WARMUPS):  # the broker's JIT and the box warmed; figures dropped
        await _live_run(base, len(events), max(COUNTS), spare)
        spare = None
    runs: dict[int, list[Live]] = {c: [] for c in COUNTS}
    for count in run_order(COUNTS, REPEATS):
        print(f"bench: segments: a run with {count} segments", flush=True)
        runs[count].append(await _live_run(base, len(events), count, spare))
        spare = None
    return [median_live(runs[c]) for c in COUNTS]


def backfill_rate(done: int, chunk: int, seconds: float) -> float:
    """Customers/s of a backfill from its stored times: ``backfill_started_at`` is the first
    page's start and ``backfill_finished_at`` the last page's start (a page short of
    ``chunk``, maybe empty), so the time between covers every page but that last one."""
    covered = done - done % chunk
    return covered / max(seconds, 1e-9)


@dataclass(frozen=True)
class Backfill:
    customers: int
    rate: float
    engine_us: float  # CPU µs per customer, the engine process
    pg_us: float  # CPU µs per customer, the Postgres server
    members: int


async def _backfilled(conn: asyncpg.Connection, proc: ServiceProcess, sid: int) -> Backfill:
    """Wait for the backfill of ``sid`` to finish; its rate, and the CPU it took."""
    postmaster = await postmaster_pid(conn)
    query = (
        "SELECT backfill_started_at, backfill_finished_at, backfill_done FROM segments"
        " WHERE id = $1"
    )
    deadline = time.monotonic() + 1800
    cpu0 = pg0 = None
    while True:
        started, finished, done = await conn.fetchrow(query, sid)
        if started is not None and cpu0 is None:
            cpu0, pg0, done0 = cpu_s(proc.pid), tree_cpu_s(postmaster), done
        if finished is not None:
            cpu1, pg1 = cpu_s(proc.pid), tree_cpu_s(postmaster)
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the backfill did not finish in 30 minutes")
        await asyncio.sleep(0.2)
    assert cpu0 is not None
    assert pg0 is not None
    n = max(done - done0, 1)
    chunk = int(os.environ.get("CLM_SEGMENTS_BACKFILL_CHUNK", "1000"))
    members = await conn.fetchval(
        "SELECT count(*) FROM segment_memberships WHERE segment_id = $1 AND left_at IS NULL", sid
    )
    return Backfill(
        done,
        backfill_rate(done, chunk, (finished - started).total_seconds()),
        (cpu1 - cpu0) / n * 1e6,
        (pg1 - pg0) / n * 1e6,
        int(members),
    )


@dataclass(frozen=True)
class Listing:
    members: int
    customers: int
    fill_s: float
    pages: Reads  # limit 100
    big_pages: Reads  # limit 1000
    walk_s: float  # every member, pages of 1000
    walk_pages: int


def members_get(segment_id: int, after: str | None, limit: int) -> bytes:
    query = f"limit={limit}" + (f"&after={after}" if after else "")
    return (
        f"GET /v1/segments/{segment_id}/members?{query} HTTP/1.1\r\nHost: engine\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    ).encode()


async def _page_rounds(port: int, segment_id: int, limit: int, pages: int) -> Reads:
    """``ROUNDS`` rounds of ``pages`` pages, each round from a random customer on, following
    ``next`` (from the start again after the last page)."""
    conn = await Conn.open(port)
    p50s, p99s, counts = [], [], []
    try:
        for _ in range(ROUNDS):
            after: str | None = f"fill-{random.randint(1, LISTING_CUSTOMERS)}"
            took = []
            for _ in range(pages):
                raw = members_get(segment_id, after, limit)
                started = time.perf_counter()
                status, body = await conn.fetch(raw)
                took.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    raise RuntimeError(f"GET members answered {status}: {body[:200]!r}")
                after = next_cursor(body)
            took.sort()
            counts.append(len(took))
            p50s.append(statistics.median(took))
            p99s.append(percentile(took, 0.99))
    finally:
        conn.close()
    return Reads(p50s, p99s, counts)


async def _walk(port: int, segment_id: int) -> tuple[float, int, int]:
    """Every member, in pages of 1000: seconds, pages, members."""
    conn = await Conn.open(port)
    after: str | None = None
    pages = members = 0
    started = time.perf_counter()
    try:
        while True:
            status, body = await conn.fetch(members_get(segment_id, after, 1000))
            if status != 200:
                raise RuntimeError(f"GET members answered {status}")
            pages += 1
            members += body.count(b'"customer_id"')
            after = next_cursor(body)
            if after is None:
                return time.perf_counter() - started, pages, members
    finally:
        conn.close()


async def _listing(conn: asyncpg.Connection, port: int) -> Listing:
    """Fill the customers up to ``LISTING_CUSTOMERS`` and a segment of every
    ``LISTING_EVERY``-th one, then page through it."""
    started = time.perf_counter()
    await conn.execute(FILL_VARIED_SQL, BACKFILL_CUSTOMERS + 1, LISTING_CUSTOMERS)
    shape, template = TEMPLATES[3]
    condition = dump_condition(parse_condition(template(0)))
    (sid,) = await define_segments(conn, [(f"bench-listing-{shape}", condition)])
    await conn.execute(FILL_MEMBERS_SQL, sid, LISTING_CUSTOMERS, LISTING_EVERY)
    await conn.execute(FILL_CLOSED_SQL, sid, LISTING_CUSTOMERS, CLOSED_EVERY)
    await conn.execute("VACUUM ANALYZE customers")
    await conn.execute("VACUUM ANALYZE segment_memberships")
    fill_s = time.perf_counter() - started
    customers = int(await conn.fetchval("SELECT count(*) FROM customers"))
    pages = await _page_rounds(port, sid, 100, PAGES)
    big = await _page_rounds(port, sid, 1000, max(1, PAGES // 10))
    walk_s, walk_pages, members = await _walk(port, sid)
    return Listing(members, customers, fill_s, pages, big, walk_s, walk_pages)


async def backfill_and_listing() -> tuple[Backfill, Listing]:
    """Parts (b) and (c), on one database and one engine process."""
    db_url = await create_migrated_database("clm_bench_seg")
    env = await stack_env(db_url, CLM_STAGE_ENGINE_IDLE_RECHECK_S="0.1")
    engine = create_engine(db_url, pool_size=1)
    async with engine.begin() as c:
        await store_key(c, key=TOKEN, kind="read", source="bench")
    await engine.dispose()
    conn = await asyncpg.connect(plain_url(db_url))
    proc = None
    try:
        await conn.execute(FILL_VARIED_SQL, 1, BACKFILL_CUSTOMERS)
        await conn.execute("VACUUM ANALYZE customers")
        defined = segment_conditions(10)
        await define_segments(conn, defined[:9])
        (sid,) = await define_segments(conn, defined[9:], backfill=True)
        proc = start_service(
            "stage-engine", env, Path(tempfile.mkdtemp(prefix="clm-bench-")), free_port()
        )
        backfill = await _backfilled(conn, proc, sid)
        listing = await _listing(conn, proc.port)
    finally:
        if proc is not None:
            proc.stop()
        await conn.close()
    await drop_database(db_url)
    return backfill, listing


def ratio(runs: list[Live], count: int) -> float | None:
    """The median rate with ``count`` segments over the median rate with none."""
    by = {r.segments: r.run.rate for r in runs}
    if 0 not in by or count not in by or not by[0]:
        return None
    return by[count] / by[0]


def _phase_row(r: Live, events: int) -> str:
    cells = " | ".join(f"{r.phases.get(p, 0.0) / events * 1e6:.1f}" for p in PHASES)
    return f"| {r.segments} | {cells} | {sum(r.phases.values()) / events * 1e6:.1f} |"


def _live_rows(runs: list[Live], events: int) -> str:
    rows = []
    for r in runs:
        share = ratio(runs, r.segments)
        each = " / ".join(f"{x:,.0f}" for x in r.run.rates)
        rows.append(
            f"| {r.segments} | **{r.run.rate:,.0f} events/s** | {each} "
            f"| {'-' if share is None else f'{share:.3f}'} | {r.run.engine_us:.0f} µs "
            f"| {r.run.pg_us:.0f} µs | {r.changes / events:.2f} | {r.open_spans:,} "
            f"| {r.clocks:,} |"
        )
    return "\n".join(rows)


def report(runs: list[Live], backfill: Backfill, listing: Listing) -> str:
    ten = ratio(runs, 10)
    fifty = ratio(runs, 50)
    met = "-" if ten is None else "met" if ten >= 0.85 else "missed"
    phases = "\n".join(_phase_row(r, EVENTS) for r in runs)
    names = " | ".join(PHASES)
    return f"""## Segments: live cost, backfill, members listing

(a) {EVENTS:,} journey events ({EVENTS // 5:,} customers × 5: two visits, a signup, two
purchases, one topic of 6 partitions) applied by one stage-engine process (batches of 2000)
with {", ".join(str(c) for c in COUNTS)} segments defined, each run on a fresh database and the
same topic; segments defined in SQL as the API defines them (the catalog's lock, the
definition and its version, the catalog bumped), none with a backfill pending, so only the
live path works on them: ten shapes (stage, counts, money, days since, any/all/not) with
their thresholds moved for more than ten (`bench/segment_defs.py`). {REPEATS} runs a count
(`CLM_BENCH_SEGMENTS_REPEATS`), alternating forward and backward after {WARMUPS} untimed
run(s); the table gives each count's run of median rate. Timed as the stage-engine bench
times (first applied batch to the last event applied and the outbox empty: the segment
records are published too).

| segments | median rate | each run's rate (events/s) | ratio to 0 segments | engine CPU / event | Postgres CPU / event | entries + exits / event | open spans after | segment clocks after |
|---:|---:|---|---:|---:|---:|---:|---:|---:|
{_live_rows(runs, EVENTS)}

| measure | value |
|---|---|
| ratio 10 segments ÷ none | **{"-" if ten is None else f"{ten:.3f}"}** |
| ratio 50 segments ÷ none | {"-" if fifty is None else f"{fifty:.3f}"} |
| target ≥ 0.85 with 10 segments | {met} |

Where a batch's time went: the engine's `clm_stage_engine_phase_seconds_total` over the
whole run (the median run of each count), µs per event; wall time summed over the process's
lanes (`CLM_STAGE_ENGINE_LANES` consumer loops side by side, waits on Postgres included), so
more than the wall time an event takes:

| segments | {names} | total |
|---:|{"---:|" * (len(PHASES) + 1)}
{phases}

(b) Backfill of a new segment (`{segment_conditions(10)[9][0]}`, nine others live) over
{backfill.customers:,} customers filled in SQL (every stage, channel, count and recency),
pages of `CLM_SEGMENTS_BACKFILL_CHUNK` customers a transaction, by one engine process that
has no events to apply; the rate from the backfill's own start and finish times.

| measure | value |
|---|---|
| backfill rate | **{backfill.rate:,.0f} customers/s** |
| engine CPU / customer | {backfill.engine_us:.0f} µs |
| Postgres CPU / customer | {backfill.pg_us:.0f} µs |
| members after | {backfill.members:,} |

(c) `GET /v1/segments/{{id}}/members` over HTTP (keep-alive, raw client) against the same
process, the customers table filled to {listing.customers:,} rows and a segment of
{listing.members:,} members (every {LISTING_EVERY}nd customer, with a closed span for every
{CLOSED_EVERY}th: its history), filled in SQL in {listing.fill_s:.0f} s. A round starts
from a random customer id and follows the `next` cursors (from the start again after the
last page); {ROUNDS} rounds, the medians of the rounds' p50s and p99s.

| request | p50 | p99 | rounds' p99s |
|---|---:|---:|---|
| `limit=100`, {listing.pages.counts[0]} pages a round | {listing.pages.p50_ms:.2f} ms | **{listing.pages.p99_ms:.2f} ms** | {listing.pages.spread()} ms |
| `limit=1000`, {listing.big_pages.counts[0]} pages a round | {listing.big_pages.p50_ms:.2f} ms | {listing.big_pages.p99_ms:.2f} ms | {listing.big_pages.spread()} ms |
| every member, pages of 1000 | {listing.walk_pages} pages in {listing.walk_s:.1f} s | {listing.members / listing.walk_s:,.0f} members/s | |
"""


async def run() -> str:
    backfill, listing = await backfill_and_listing()
    runs = await live()
    return report(runs, backfill, listing)


def main() -> None:
    write_section("segments", asyncio.run(run()))
