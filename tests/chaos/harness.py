"""The fault-injection harness: the real stack as processes, simulated load, a ledger, a check.

- :class:`ChaosStack`: the three services as processes (any one killed, restarted or doubled);
- :class:`Ledger` and :func:`send`: journeys from the simulator posted through its sender
  (Segment-style retries), every request timed and every acknowledged event recorded — the
  oracle;
- :func:`settle` and :func:`check`: wait until the stack has caught up, read what it holds
  (Postgres, Kafka, the metrics API) and hold it against the oracle
  (:mod:`tests.chaos.invariants`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_cli.sender import IngestClient, Outcome, Plan, Progress, post_all
from clm_devstack.services import ServiceProcess, start_service
from clm_infra.db import create_engine
from clm_infra.kafka import topic_partitions
from clm_infra.schema import (
    consumer_offsets,
    customer_events,
    customers,
    metrics_processed,
    outbox,
    outbox_batches,
    processed_events,
)
from clm_infra.settings import KafkaSettings
from clm_simulator.personas import SimConfig, simulate
from clm_simulator.replay import replay, stages_as_of
from tests.chaos.invariants import DeadLetter, EventKey, Expected, Observed, assert_invariant
from tests.e2e.conftest import free_port, free_ports
from tests.integration.conftest import eventually
from tests.keys import READ, WRITE_KEY

SOURCE = "shop"  # the write key's source
SERVICES = ("ingest", "stage-engine", "metrics")
BOUND_S = 10.0  # the bound: the ingest answers (2xx or 503) within 10 s, none hangs


def event_key(doc: Mapping[str, Any]) -> EventKey:
    return (str(doc.get("source") or SOURCE), str(doc["event_id"]))


def customer_of(doc: Mapping[str, Any]) -> str | None:
    key = doc.get("customer_id") or doc.get("anonymous_id")
    return None if key is None else str(key)


def journeys(seed: int, customers_: int, prefix: str) -> list[dict[str, Any]]:
    """Simulated journeys ending now (time-ordered documents, as a client posts them)."""
    cfg = SimConfig(
        seed=seed, customers=customers_, as_of=datetime.now(UTC), source=SOURCE, prefix=prefix
    )
    return simulate(cfg).docs


# --------------------------------------------------------------------------- the stack
class ChaosStack:
    """The three services as processes on free ports; any of them replaced at will."""

    def __init__(self, env: dict[str, str], logs_dir: Path) -> None:
        self.env = env
        self.logs_dir = logs_dir
        self.procs: dict[str, list[ServiceProcess]] = {name: [] for name in SERVICES}
        self.started = 0

    def start(self, name: str, *, replica: str = "") -> ServiceProcess:
        logs = self.logs_dir / replica if replica else self.logs_dir
        proc = start_service(name, self.env, logs, free_port(), timeout=90)
        self.procs[name].append(proc)
        self.started += 1
        return proc

    def start_all(self) -> ChaosStack:
        """The three services, started side by side (none waits for another to answer)."""
        with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
            starting = [
                pool.submit(start_service, name, self.env, self.logs_dir, port, timeout=90)
                for name, port in zip(SERVICES, free_ports(len(SERVICES)), strict=True)
            ]
            wait(starting)
        for name, future in zip(SERVICES, starting, strict=True):
            if future.exception() is None:
                self.procs[name].append(future.result())
                self.started += 1
        for future in starting:
            future.result()  # the first start-up that failed, raised (stop_all stops the rest)
        return self

    def url(self, name: str) -> str:
        alive = [p for p in self.procs[name] if p.alive()]
        assert alive, f"no {name} process runs"
        return alive[-1].base_url

    def alive(self, name: str) -> list[ServiceProcess]:
        return [p for p in self.procs[name] if p.alive()]

    def stop_all(self) -> None:
        running = [proc for procs in self.procs.values() for proc in procs if proc.alive()]
        with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
            list(pool.map(ServiceProcess.stop, running))

    def assignments(self, name: str) -> int:
        """How many times ``name``'s processes were handed partitions (their logs say so)."""
        count = 0
        for proc in self.procs[name]:
            for line in proc.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{") and orjson.loads(line).get("msg") == "partitions assigned":
                    count += 1
        return count


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid`` (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def scrape(base_url: str) -> str:
    """A service's Prometheus exposition (``/metrics``)."""
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"{base_url}/metrics")).text


def sample_value(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in exposition.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric.split("{")[0] == name and all(w in metric for w in wanted):
            total += float(value)
    return total


async def ready(base_url: str) -> bool:
    """Whether the service's ``/readyz`` answers 200."""
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"{base_url}/readyz")).status_code == 200


# --------------------------------------------------------------------------- load and ledger
@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP exchange with the ingest: its status (None: no answer) and how long it took."""

    path: str
    status: int | None
    seconds: float
    error: str | None = None


@dataclass
class Ledger:
    """Every event sent and every event the ingest acknowledged (2xx), and each request."""

    sent: dict[EventKey, dict[str, Any]] = field(default_factory=dict)
    acked: set[EventKey] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)

    def docs(self, keys: Iterable[EventKey]) -> list[dict[str, Any]]:
        return [self.sent[k] for k in keys if k in self.sent]

    def misbehaving(self, bound_s: float) -> list[Request]:
        """Requests answered by neither 2xx nor 503, or later than ``bound_s``."""
        return [
            r
            for r in self.requests
            if r.seconds > bound_s or r.status is None or not (r.status < 300 or r.status == 503)
        ]


class TimedTransport(httpx.AsyncBaseTransport):
    """An HTTP transport that records each request's status and duration in a list."""

    def __init__(self, into: list[Request]) -> None:
        self.into = into
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=2.0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        began = time.monotonic()
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as exc:
            self.into.append(
                Request(request.url.path, None, time.monotonic() - began, type(exc).__name__)
            )
            raise
        self.into.append(Request(request.url.path, response.status_code, time.monotonic() - began))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class LedgerClient(IngestClient):
    """The simulator's sender, writing what it sent and what was acknowledged in a ledger."""

    def __init__(self, url: str, ledger: Ledger, *, max_attempts: int = 30) -> None:
        # Pooled connections expire before the ingest's (uvicorn's) 5 s keep-alive does: a
        # retry after Retry-After (5 s) must not reuse a connection the server is closing.
        transport = TimedTransport(ledger.requests)
        http = httpx.AsyncClient(timeout=30.0, transport=transport)
        super().__init__(url, WRITE_KEY, client=http, max_attempts=max_attempts)
        self.ledger = ledger

    async def send(self, docs: Any, *, batch: bool) -> Outcome:
        for doc in docs:
            self.ledger.sent[event_key(doc)] = doc
        if not batch:  # one request per event: record each answer as it comes
            total = Outcome()
            for doc in docs:
                one = await super().send([doc], batch=True)
                total.accepted += one.accepted
                total.rejected += one.rejected
                total.retries += one.retries
                self._record([doc], one)
            return total
        outcome = await super().send(docs, batch=True)
        self._record(docs, outcome)
        return outcome

    def _record(self, docs: Any, outcome: Outcome) -> None:
        refused = {event_id for event_id, _ in outcome.rejected}
        self.ledger.acked.update(event_key(d) for d in docs if str(d["event_id"]) not in refused)


async def send(
    ingest_url: str,
    docs: list[dict[str, Any]],
    ledger: Ledger,
    *,
    batch: int = 25,
    workers: int = 4,
    rate: float = 0.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Post ``docs`` (each customer's in order) and record the outcome in ``ledger``."""
    client = LedgerClient(ingest_url, ledger)
    try:
        await post_all(
            docs,
            client,
            Plan(batch=batch, workers=workers, rate=rate),
            Progress(rate, stream=io.StringIO()),
            stop=stop,
        )
    finally:
        await client.aclose()


async def keep_sending(
    ingest_url: str,
    ledger: Ledger,
    stop: asyncio.Event,
    *,
    customers_per_wave: int = 40,
    rate: float = 80.0,
    tag: str = "w",
) -> None:
    """Waves of fresh journeys at ``rate`` events/s until ``stop`` is set."""
    wave = 0
    while not stop.is_set():
        wave += 1
        docs = journeys(wave, customers_per_wave, f"{tag}{wave}")
        await send(ingest_url, docs, ledger, batch=10, rate=rate, stop=stop)


# --------------------------------------------------------------------------- reading the end state
async def _end_offsets(bootstrap: str, topics: list[str]) -> dict[str, dict[int, int]]:
    parts = await topic_partitions(KafkaSettings(bootstrap=bootstrap), topics)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    out: dict[str, dict[int, int]] = {t: {} for t in parts}
    for tp, end in ends.items():
        out[tp.topic][tp.partition] = int(end)
    return out


async def read_dead_letters(bootstrap: str, topic: str) -> list[DeadLetter]:
    """Every record of the dead-letter topic, by where it came from and why."""
    ends = (await _end_offsets(bootstrap, [topic])).get(topic, {})
    tps = [TopicPartition(topic, p) for p, end in ends.items() if end > 0]
    out: list[DeadLetter] = []
    if not tps:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp.partition: ends[tp.partition] for tp in tps}
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers}
                    out.append(
                        DeadLetter(
                            int(headers["original_partition"]),
                            int(headers["original_offset"]),
                            headers["reason"],
                        )
                    )
                    if r.offset + 1 >= remaining.get(tp.partition, 0):
                        remaining.pop(tp.partition, None)
        assert not remaining, f"could not read the whole DLQ (left: {remaining})"
    finally:
        await consumer.stop()
    return out


async def stored_offsets(db: AsyncEngine, groups: Mapping[str, str]) -> dict[str, dict[int, int]]:
    """Stored next offsets per topic for each (group → topic) given."""
    out: dict[str, dict[int, int]] = {topic: {} for topic in groups.values()}
    async with db.connect() as conn:
        rows = await conn.execute(
            select(
                consumer_offsets.c.group_id,
                consumer_offsets.c.topic,
                consumer_offsets.c.partition,
                consumer_offsets.c.next_offset,
            ).where(consumer_offsets.c.group_id.in_(list(groups)))
        )
        for group, topic, partition, offset in rows:
            if groups[group] == topic:
                out[topic][int(partition)] = int(offset)
    return out


def _groups(env: Mapping[str, str]) -> dict[str, str]:
    return {
        env["CLM_STAGE_ENGINE_GROUP"]: env["CLM_TOPIC_EVENTS"],
        env["CLM_METRICS_GROUP"]: env["CLM_TOPIC_LIFECYCLE"],
    }


async def caught_up(env: Mapping[str, str], db: AsyncEngine) -> bool:
    """The stage engine and the metrics stored the log end, and the outbox is empty."""
    groups = _groups(env)
    ends = await _end_offsets(env["CLM_KAFKA_BOOTSTRAP"], list(groups.values()))
    stored = await stored_offsets(db, groups)
    async with db.connect() as conn:
        pending = [
            (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (outbox, outbox_batches)
        ]
    return pending == [0, 0] and all(
        stored[t].get(p, 0) == end for t, parts in ends.items() for p, end in parts.items()
    )


async def lag(env: Mapping[str, str], db: AsyncEngine) -> dict[str, int]:
    """Records each consumer group has still to apply (log end minus stored offset), by topic."""
    groups = _groups(env)
    ends = await _end_offsets(env["CLM_KAFKA_BOOTSTRAP"], list(groups.values()))
    stored = await stored_offsets(db, groups)
    return {t: sum(end - stored[t].get(p, 0) for p, end in ps.items()) for t, ps in ends.items()}


async def kafka_committed(env: Mapping[str, str]) -> dict[str, dict[int, int]]:
    """The offsets each consumer group committed to Kafka (the hint written after Postgres)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=env["CLM_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        out: dict[str, dict[int, int]] = {}
        for group in _groups(env):
            committed = await admin.list_consumer_group_offsets(group)
            out[group] = {tp.partition: meta.offset for tp, meta in committed.items()}
        return out
    finally:
        await admin.close()


async def settle(env: Mapping[str, str], *, timeout: float = 240.0) -> None:
    """Wait until everything is applied downstream, past one more sweep, and still so."""
    db = create_engine(env["CLM_DATABASE_URL"], pool_size=1)
    sweep_s = float(env.get("CLM_STAGE_ENGINE_SWEEP_S", "60"))
    try:
        for _ in range(2):

            async def done() -> bool:
                return await caught_up(env, db)

            await eventually(done, timeout=timeout, every=0.5)
            await asyncio.sleep(sweep_s + 1.0)  # a sweep after the last event
    finally:
        await db.dispose()


async def _kpi_events(metrics_url: str) -> int:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(days=800), now + timedelta(days=2)
    query = {"from": start.isoformat(), "to": end.isoformat()}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(
            f"{metrics_url}/v1/kpis",
            params=query,
            headers=READ,
        )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["events"])


async def observe(env: Mapping[str, str], *, metrics_url: str | None) -> Observed:
    """What the stack holds: per-event rows, customers, offsets, the DLQ, the metrics' counts."""
    db = create_engine(env["CLM_DATABASE_URL"], pool_size=1)
    try:
        groups = _groups(env)
        async with db.connect() as conn:
            # an applied event's claim is its event-log row; events without one are claimed
            # in processed_events: an event in both is claimed twice
            processed = [
                (str(s), str(e))
                for s, e in await conn.execute(
                    select(processed_events.c.source, processed_events.c.event_id).union_all(
                        select(customer_events.c.source, customer_events.c.event_id)
                    )
                )
            ]
            logged = [
                ((str(s), str(e)), str(c))
                for s, e, c in await conn.execute(
                    select(
                        customer_events.c.source,
                        customer_events.c.event_id,
                        customer_events.c.customer_id,
                    )
                )
            ]
            rows = (
                await conn.execute(
                    select(customers.c.customer_id, customers.c.stage, customers.c.events)
                )
            ).all()
            records = [str(r) for (r,) in await conn.execute(select(metrics_processed.c.record_id))]
        offsets = await stored_offsets(db, groups)
    finally:
        await db.dispose()
    bootstrap = env["CLM_KAFKA_BOOTSTRAP"]
    return Observed(
        processed=processed,
        logged=logged,
        customer_events={str(c): int(n) for c, _, n in rows},
        stages={str(c): str(s) for c, s, _ in rows},
        offsets=offsets,
        log_end=await _end_offsets(bootstrap, list(groups.values())),
        dlq=await read_dead_letters(bootstrap, env["CLM_TOPIC_DLQ"]),
        metrics_records=records,
        kpi_events=None if metrics_url is None else await _kpi_events(metrics_url),
    )


def expect(
    ledger: Ledger,
    observed: Observed,
    *,
    poison: Mapping[tuple[int, int], str] | None = None,
    erased: frozenset[str] = frozenset(),
) -> Expected:
    """The oracle for this run; stages: the truth for the sent events that were applied."""
    applied = set(observed.processed) & set(ledger.sent)
    docs = [d for d in ledger.docs(applied) if customer_of(d) not in erased]
    now = datetime.now(UTC)
    stages = {c: s.value for c, s in stages_as_of(replay(docs, now=now), now).items()}
    return Expected(
        sent={k: customer_of(d) for k, d in ledger.sent.items()},
        acked=frozenset(ledger.acked),
        stages=stages,
        poison=dict(poison or {}),
        erased=erased,
    )


async def check(
    env: Mapping[str, str],
    ledger: Ledger,
    *,
    metrics_url: str | None,
    poison: Mapping[tuple[int, int], str] | None = None,
    erased: frozenset[str] = frozenset(),
) -> Observed:
    """Settle, observe and assert the invariant; returns what was observed."""
    await settle(env)
    observed = await observe(env, metrics_url=metrics_url)
    assert ledger.acked, "the run acknowledged nothing: the scenario tested nothing"
    expected = expect(ledger, observed, poison=poison, erased=erased)
    print(
        f"chaos: {len(ledger.sent)} events sent, {len(ledger.acked)} acknowledged, "
        f"{len(set(observed.processed))} applied, {len(expected.stages)} customers, "
        f"{len(observed.dlq)} dead letters, {len(ledger.requests)} requests "
        f"({sum(r.status == 503 for r in ledger.requests)} answered 503)"
    )
    assert_invariant(expected, observed)
    return observed


class Load:
    """Journeys sent in the background (:func:`keep_sending`) until :meth:`finish`."""

    def __init__(self, ingest_url: str, ledger: Ledger, **how: Any) -> None:
        self.ledger = ledger
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(keep_sending(ingest_url, ledger, self.stop, **how))

    async def grows(self, *, by: int, timeout: float = 120.0) -> None:
        await acks_grow(self.ledger, self.task, by=by, timeout=timeout)

    async def finish(self) -> None:
        self.stop.set()
        await self.task


@contextlib.asynccontextmanager
async def loaded(stack: ChaosStack, ledger: Ledger, **how: Any) -> AsyncIterator[Load]:
    """``stack`` under load while the block runs; the services are stopped after it."""
    load = Load(stack.url("ingest"), ledger, **how)
    try:
        yield load
    finally:
        load.stop.set()
        load.task.cancel()
        with contextlib.suppress(BaseException):
            await load.task
        stack.stop_all()


async def acks_grow(ledger: Ledger, sender: asyncio.Task[None], *, by: int, timeout: float) -> None:
    """Wait until ``by`` more events were acknowledged (the sender failing fails this)."""
    target = len(ledger.acked) + by
    deadline = time.monotonic() + timeout
    while len(ledger.acked) < target:
        if sender.done():
            sender.result()  # raises what stopped it
            raise AssertionError("the sender stopped early")
        assert time.monotonic() < deadline, (
            f"acknowledged {len(ledger.acked)}, not {target}, within {timeout}s"
        )
        await asyncio.sleep(0.1)
