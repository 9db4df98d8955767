"""Ingest benchmark: the broker's ceiling, the Python client's ceiling, then our ingest.

All four run in one process tree on the same machine and broker, one after the other:

(a) Kafka's own ``ProducerPerformance`` (Java) with our record size and producer settings;
(b) a bare aiokafka producer loop (``clm_infra.kafka.make_producer``, our records);
(c) the ingest (a real ``python -m clm_ingest`` process) with one event per request:
    the most requests/s 64 connections get, and p50/p99 at a fixed offered 2,000 req/s
    (open loop: latency counts from the moment a request was due, so a stall is not hidden);
(d) the ingest with 100- and 500-event batches (``/v1/events/batch``), 8 connections.

The load generator is a minimal HTTP/1.1 keep-alive client on asyncio (uvloop) in this
process: it shares the 2 cores with the ingest and the broker, as a co-located client would.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.databases import create_migrated_database, drop_database
from bench.http import Conn
from bench.results import write_section
from clm_devstack.kafka import find_java, jars_dir
from clm_devstack.services import start_service
from clm_infra.db import create_engine
from clm_infra.kafka import make_producer
from clm_infra.keys import store_key
from clm_infra.settings import CommonSettings, KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-write-key"
PARTITIONS = 6
SECONDS = float(os.environ.get("CLM_BENCH_SECONDS", "10"))
CUSTOMERS = 1000


def event(i: int) -> dict[str, Any]:
    """A representative touchpoint: a purchase with a few properties (~300 bytes of JSON)."""
    return {
        "event_id": str(uuid.uuid4()),
        "type": "purchase",
        "customer_id": f"cust-{i % CUSTOMERS:05d}",
        "occurred_at": "2026-11-23T10:15:00Z",
        "channel": "email",
        "properties": {
            "order_id": f"o-{i:08d}",
            "amount": "59.90",
            "currency": "EUR",
            "coupon": "WELCOME10",
        },
    }


def wire_record() -> bytes:
    """What the ingest publishes for one such event (with source, as on the topic)."""
    return orjson.dumps({**event(1), "source": "bench"})


# --- setup ------------------------------------------------------------------------------------


async def make_database() -> str:
    url = await create_migrated_database("clm_bench")
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as c:
        await store_key(c, key=KEY, kind="write", source="bench", label="bench")
    await engine.dispose()
    return url


async def make_topic(bootstrap: str) -> str:
    name = f"bench.ingest.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=name, num_partitions=PARTITIONS, replication_factor=1)]
        )
    finally:
        await admin.close()
    return name


# --- (a) Kafka's producer perf tool -----------------------------------------------------------


@dataclass
class Rate:
    per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None


def kafka_perf(bootstrap: str, topic: str, record_size: int, records: int = 1_000_000) -> Rate:
    libs = jars_dir(ROOT)
    with tempfile.NamedTemporaryFile("w", suffix=".properties") as log4j:
        log4j.write("rootLogger.level = WARN\n")
        log4j.flush()
        done = subprocess.run(
            [
                find_java(),
                "-Xmx256m",
                f"-Dlog4j2.configurationFile={log4j.name}",
                "-cp",
                f"{libs}/*",
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic",
                topic,
                "--num-records",
                str(records),
                "--record-size",
                str(record_size),
                "--throughput",
                "-1",
                "--producer-props",
                f"bootstrap.servers={bootstrap}",
                "acks=all",
                "enable.idempotence=true",
                "linger.ms=2",
                "batch.size=262144",
                "compression.type=none",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    final = [line for line in done.stdout.splitlines() if "records sent" in line][-1]
    match = re.search(
        r"([\d.]+) records/sec.*?([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th", final
    )
    if match is None:
        raise RuntimeError(f"unexpected ProducerPerformance output: {final}")
    return Rate(float(match[1]), float(match[2]), float(match[4]))


# --- (b) bare aiokafka ------------------------------------------------------------------------


async def aiokafka_loop(bootstrap: str, topic: str, records: int = 200_000) -> Rate:
    settings = CommonSettings(kafka=KafkaSettings(bootstrap=bootstrap))
    producer = make_producer(settings, client_id="bench")
    await producer.start()
    value = wire_record()
    headers = [("schema_version", b"1"), ("source", b"bench"), ("type", b"purchase")]
    keys = [f"cust-{i:05d}".encode() for i in range(CUSTOMERS)]
    try:
        started = time.perf_counter()
        pending = []
        for i in range(records):
            pending.append(
                await producer.send(topic, value=value, key=keys[i % CUSTOMERS], headers=headers)
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return Rate(records / (time.perf_counter() - started))
    finally:
        await producer.stop()


# --- (c), (d) our ingest over HTTP ------------------------------------------------------------


def http_post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def single_requests(n: int = 2000) -> list[bytes]:
    return [http_post("/v1/events", orjson.dumps(event(i))) for i in range(n)]


def batch_requests(size: int, n: int = 50) -> list[bytes]:
    return [
        http_post(
            "/v1/events/batch",
            orjson.dumps({"events": [event(j * size + i) for i in range(size)]}),
        )
        for j in range(n)
    ]


@dataclass
class Load:
    requests: int
    events: int
    seconds: float
    errors: int
    latencies_ms: list[float]

    def rate(self) -> Rate:
        lat = sorted(self.latencies_ms)
        return Rate(
            self.events / self.seconds,
            statistics.median(lat) if lat else None,
            lat[int(len(lat) * 0.99) - 1] if lat else None,
        )


async def closed_loop(port: int, bodies: list[bytes], events_each: int, conns: int) -> Load:
    """``conns`` connections, each sending its next request once the previous answered."""
    pool = [await Conn.open(port) for _ in range(conns)]
    deadline = time.perf_counter() + SECONDS
    counts = {"ok": 0, "err": 0}
    latencies: list[float] = []

    async def worker(conn: Conn, offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status = await conn.request(bodies[i % len(bodies)])
            latencies.append((time.perf_counter() - t0) * 1000)
            counts["ok" if status == 202 else "err"] += 1
            i += conns

    started = time.perf_counter()
    await asyncio.gather(*(worker(c, k) for k, c in enumerate(pool)))
    elapsed = time.perf_counter() - started
    for c in pool:
        c.close()
    return Load(counts["ok"], counts["ok"] * events_each, elapsed, counts["err"], latencies)


async def open_loop(port: int, bodies: list[bytes], rate: float, conns: int = 200) -> Load:
    """Requests due every 1/rate s whatever happens; latency counted from when each was due."""
    free: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns):
        free.put_nowait(await Conn.open(port))
    latencies: list[float] = []
    counts = {"ok": 0, "err": 0}
    total = int(rate * SECONDS)
    tasks: list[asyncio.Task[None]] = []

    async def one(due: float, raw: bytes) -> None:
        conn = await free.get()
        status = await conn.request(raw)
        latencies.append((time.perf_counter() - due) * 1000)
        counts["ok" if status == 202 else "err"] += 1
        free.put_nowait(conn)

    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not free.empty():
        free.get_nowait().close()
    return Load(counts["ok"], counts["ok"], elapsed, counts["err"], latencies)


# --- the run ----------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.1f}{unit}" if value < 100 else f"{value:,.0f}{unit}"


async def run() -> str:
    bootstrap = os.environ["CLM_KAFKA_BOOTSTRAP"]
    record_size = len(wire_record())
    lines: list[tuple[str, Rate, str]] = []

    print(f"bench ingest: (a) ProducerPerformance, {record_size}-byte records", flush=True)
    ceiling_a = kafka_perf(bootstrap, await make_topic(bootstrap), record_size)
    print(f"bench ingest: (b) aiokafka loop -> (a) {ceiling_a.per_s:,.0f}/s", flush=True)
    ceiling_b = await aiokafka_loop(bootstrap, await make_topic(bootstrap))
    print(f"bench ingest: (c) ingest -> (b) {ceiling_b.per_s:,.0f}/s", flush=True)

    db_url = await make_database()
    topic = await make_topic(bootstrap)
    logs = Path(tempfile.mkdtemp(prefix="clm-bench-"))
    port = 18911
    env = {
        "CLM_ENV": "test",
        "CLM_KAFKA_BOOTSTRAP": bootstrap,
        "CLM_DATABASE_URL": db_url,
        "CLM_TOPIC_EVENTS": topic,
        "CLM_LOG_LEVEL": "WARNING",
        "CLM_INGEST_RATE_LIMIT_PER_S": "0",
        "CLM_RATE_LIMIT_ADDRESS_PER_S": "0",  # the load comes from one address
        "CLM_AUTH_CACHE_S": "60",
    }
    proc = start_service("ingest", env, logs, port)
    try:
        singles = single_requests()
        await closed_loop(port, singles, 1, 16)  # warm up (connections, caches, producer)
        single_max = (await closed_loop(port, singles, 1, 64)).rate()
        fixed = await open_loop(port, singles, 2000)
        fixed_rate = fixed.rate()
        print(
            f"bench ingest: single max {single_max.per_s:,.0f} req/s; at 2,000/s p50 "
            f"{fixed_rate.p50_ms} p99 {fixed_rate.p99_ms} ms ({fixed.errors} errors)",
            flush=True,
        )
        batches = {}
        for size in (100, 500):
            load = await closed_loop(port, batch_requests(size), size, 8)
            batches[size] = (load.rate(), load.errors)
            print(f"bench ingest: batch {size}: {load.rate().per_s:,.0f} events/s", flush=True)
    finally:
        proc.stop()
        await drop_database(db_url)

    lines = [
        ("(a) Kafka ProducerPerformance (Java)", ceiling_a, "broker ceiling"),
        ("(b) bare aiokafka producer loop", ceiling_b, "Python client ceiling"),
        ("(c) ingest, 1 event/request, 64 connections", single_max, "req/s"),
        ("(c) ingest, 1 event/request, offered 2,000 req/s", fixed_rate, "open loop"),
        ("(d) ingest, 100-event batches, 8 connections", batches[100][0], "events/s"),
        ("(d) ingest, 500-event batches, 8 connections", batches[500][0], "events/s"),
    ]
    rows = [
        "| run | events/s | vs (a) | vs (b) | p50 ms | p99 ms | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, rate, note in lines:
        rows.append(
            f"| {name} | {rate.per_s:,.0f} | {rate.per_s / ceiling_a.per_s:.0%} | "
            f"{rate.per_s / ceiling_b.per_s:.0%} | {_fmt(rate.p50_ms)} | {_fmt(rate.p99_ms)} | "
            f"{note} |"
        )
    best_batch = max(batches[100][0].per_s, batches[500][0].per_s)
    targets = [
        (
            "batched ingest ≥ 25,000 events/s",
            f"{best_batch:,.0f}",
            best_batch >= 25_000,
        ),
        (
            "batched ingest ≥ 50% of (b)",
            f"{best_batch / ceiling_b.per_s:.0%}",
            best_batch >= 0.5 * ceiling_b.per_s,
        ),
        (
            "single-event ≥ 3,000 req/s",
            f"{single_max.per_s:,.0f}",
            single_max.per_s >= 3000,
        ),
        (
            "p99 ≤ 25 ms at 2,000 req/s",
            f"{_fmt(fixed_rate.p99_ms)} ms ({fixed.errors} errors)",
            (fixed_rate.p99_ms or 1e9) <= 25 and fixed.errors == 0,
        ),
    ]
    rows += ["", "| target | measured | met |", "|---|---:|---|"]
    rows += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets]
    errors = sum(e for _, e in batches.values())
    return (
        "## Ingest\n\n"
        f"Record: a purchase event, {record_size} bytes of JSON, keyed by one of {CUSTOMERS} "
        f"customers, topic of {PARTITIONS} partitions; producer acks=all, idempotent, "
        "linger 2 ms, 256 KiB batches, no compression (as `make_producer`). Each ingest "
        f"load runs {SECONDS:.0f} s; the load generator (Python, uvloop) shares the cores "
        f"with the ingest and the broker. Batch requests refused: {errors}.\n\n" + "\n".join(rows)
    )


def main() -> None:
    import uvloop  # uvicorn[standard] brings it; the ingest serves on it too

    write_section("ingest", uvloop.run(run()))
