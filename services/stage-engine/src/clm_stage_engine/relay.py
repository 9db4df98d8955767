"""Outbox relay: publishes committed records to ``clm.lifecycle.v1``, in order, at least once.

An ``outbox_batches`` row holds all the records of one write (:mod:`clm_stage_engine.outbox`);
the relay publishes rows in id order (with the one-record ``outbox`` rows an engine before
migration 0009 wrote) and each row's records in their order. One relay at a time holds a
transaction-scoped advisory lock, so with several replicas records of one customer are never
published out of order. A row is deleted only after the broker acknowledged all its records
(acks=all); a crash in between republishes them, and consumers dedupe by the record's stable
``record_id``.

The rows this process's batches just wrote are still in its memory (:class:`PayloadCache`,
filled after each commit): the relay asks Postgres for every pending row in order as before,
but for those rows not for their payload, which it takes from the cache (the same bytes; a
row another replica wrote, or one written before a restart, is read whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_stage_engine.outbox import unpack_records
from clm_stage_engine.repository import outbox

log = logging.getLogger(__name__)

PUBLISHED = Counter("clm_outbox_published_total", "Outbox records published to Kafka")
BACKLOG = Gauge("clm_outbox_backlog_records", "Outbox records not yet published")
GATED = Counter(
    "clm_outbox_gate_seconds_total",
    "Time the stage engine's lanes waited for the outbox relay to catch up",
)


class PayloadCache:
    """Payloads of outbox rows this process committed, by row id, until the relay publishes
    them (or finds them gone: another replica's relay published them). Bounded: past
    ``max_bytes`` of payloads the oldest rows go, and the relay reads those from Postgres
    (a replica whose relay seldom gets the lock keeps only that much)."""

    __slots__ = ("_bytes", "_rows", "max_bytes")

    def __init__(self, max_bytes: int = 16 << 20) -> None:
        self.max_bytes = max_bytes
        self._rows: dict[int, bytes] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, row_id: int, payload: bytes) -> None:
        """Row ``row_id`` committed with ``payload`` (call only after the commit)."""
        self.forget([row_id])
        self._rows[row_id] = payload
        self._bytes += len(payload)
        while self._bytes > self.max_bytes:
            self.forget([min(self._rows)])

    def snapshot(self) -> dict[int, bytes]:
        """The rows kept now (a copy: a batch committing meanwhile may evict one)."""
        return dict(self._rows)

    def forget(self, row_ids: Iterable[int]) -> None:
        """The rows were published (or are about to be deleted): not needed any more."""
        for row_id in row_ids:
            payload = self._rows.pop(row_id, None)
            if payload is not None:
                self._bytes -= len(payload)

    def forget_older(self, oldest_pending: int | None) -> None:
        """Drop the rows older than the oldest still pending (None: none is): another
        replica's relay published them (a row is put only after its commit, so a kept row
        is visible to every later read of the pending rows until it is deleted)."""
        self.forget([i for i in self._rows if oldest_pending is None or i < oldest_pending])


class OutboxGate:
    """Holds the lanes before their next fetch while more than ``limit`` lifecycle records
    wait in the outbox (0: never): the relay shares the event loop with the lanes, which can
    fold batches faster than it gets turns to publish them. A waiting lane also leaves the
    loop to the relay.

    The process's lanes share one gate, and it asks Postgres at most once every ``every_s``
    (one round trip, outside a transaction): a lane in front of it takes the answer another
    lane got less than that ago (``docs/performance.md``, *The outbox gate*)."""

    def __init__(self, engine: AsyncEngine, limit: int, *, every_s: float = 0.1) -> None:
        self.engine = engine
        self.limit = limit
        self.every_s = every_s
        self._asking = asyncio.Lock()
        self._known: tuple[float, int] | None = None  # (when, backlog) of the last answer

    async def backlog(self) -> int:
        return await outbox.backlog_alone(self.engine)

    async def _backlog_or_zero(self) -> int:
        """The backlog; 0 when Postgres cannot say (down, slow to answer): the gate does not
        stop the loop, whose batch then fails and is retried as any other would be."""
        try:
            return await self.backlog()
        except Exception:
            log.warning("outbox backlog unknown; the lane goes on", exc_info=True)
            return 0

    async def _recent_backlog(self) -> int:
        """The backlog as Postgres said it at most ``every_s`` ago (asked now if not)."""
        async with self._asking:  # lanes arriving together wait for one answer
            known = self._known
            if known is not None and time.monotonic() - known[0] < self.every_s:
                return known[1]
            waiting = await self._backlog_or_zero()
            self._known = (time.monotonic(), waiting)
            return waiting

    async def __call__(self) -> None:
        if self.limit <= 0:
            return
        started = None
        while (waiting := await self._recent_backlog()) > self.limit:
            if started is None:
                started = time.monotonic()
                log.info("lane waits for the outbox relay", extra={"backlog": waiting})
            await asyncio.sleep(self.every_s)
        if started is not None:
            GATED.inc(time.monotonic() - started)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        poll_s: float = 0.1,
        batch: int = 5000,
        backlog_every_s: float = 1.0,
        cache: PayloadCache | None = None,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.cache = cache if cache is not None else PayloadCache(0)
        self.poll_s = poll_s
        self.batch = batch
        self.backlog_every_s = backlog_every_s
        self._backlog_at = -backlog_every_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = await self.relay_once()
            except Exception:
                log.exception("outbox relay failed; retrying")
                sent = 0
                await asyncio.sleep(1.0)
            if sent < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.poll_s)

    async def relay_once(self) -> int:
        """Publish the oldest rows, up to ``batch`` records (at least one row whatever its
        size); return how many records went out."""
        async with self.engine.begin() as conn:
            if not await outbox.take_relay_lock(conn):
                return 0
            kept = self.cache.snapshot()
            rows = await outbox.pending_rows(conn, self.batch, kept)
            if not rows:
                BACKLOG.set(0)
                self.cache.forget_older(None)
                return 0
            self.cache.forget_older(rows[0].id)
            await self._publish(rows, kept)
            await outbox.delete_published(conn, rows)
            sent = int(sum(r.records for r in rows))
            self.cache.forget(r.id for r in rows)
            now = time.monotonic()
            if now - self._backlog_at >= self.backlog_every_s:  # a count is a scan: not per batch
                self._backlog_at = now
                BACKLOG.set(await outbox.backlog(conn))
        PUBLISHED.inc(sent)
        return sent

    async def _publish(self, rows: Sequence[Any], kept: Mapping[int, bytes]) -> None:
        """Send the rows' records in outbox order, whole batches per partition, and wait for
        the acks.

        Each record goes to the partition ``send()`` would pick for its key (the producer's
        default partitioner, :func:`key_hash`); building the batches here saves a future and
        a lookup per record.
        """
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        for r in rows:
            if r.topic not in partitions:  # legacy rows are one per record: look up once
                partitions[r.topic] = sorted(await self.producer.partitions_for(r.topic))
            choices = partitions[r.topic]
            if r.key is not None:  # a row of an engine before 0009
                records: Any = [(r.key.encode(), r.payload)]
            else:
                payload = r.payload if r.payload is not None else kept.get(r.id)
                if payload is None:
                    raise RuntimeError(f"outbox row {r.id}: its payload is neither read nor kept")
                records = unpack_records(payload, r.records)
            for key, value in records:
                tp = (r.topic, choices[key_hash(key) % len(choices)])
                batch = open_batches.get(tp)
                if batch is None:
                    batch = open_batches[tp] = self.producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    futures.append(await self.producer.send_batch(batch, tp[0], partition=tp[1]))
                    batch = open_batches[tp] = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record of outbox row {r.id} does not fit a batch")
        for (topic, partition), batch in open_batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)


@functools.lru_cache(maxsize=1 << 16)
def key_hash(key: bytes) -> int:
    """The default partitioner's hash of a record key (Kafka's murmur2, positive): the
    partition is ``partitions[key_hash(key) % len(partitions)]``. aiokafka's murmur2 is pure
    Python; customers recur, so it is cached."""
    return int(murmur2(key)) & 0x7FFFFFFF
