"""Outbox relay: publishes committed records to ``clm.lifecycle.v1``, in order, at least once.

An ``outbox_batches`` row holds all the records of one write (:mod:`clm_stage_engine.outbox`);
the relay publishes rows in id order (with the one-record ``outbox`` rows an engine before
migration 0009 wrote) and each row's records in their order. One relay at a time holds a
transaction-scoped advisory lock, so with several replicas records of one customer are never
published out of order. A row is deleted only after the broker acknowledged all its records
(acks=all); a crash in between republishes them, and consumers dedupe by the record's stable
``record_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_stage_engine.outbox import unpack_records

log = logging.getLogger(__name__)

RELAY_LOCK_ID = 0x434C4D01  # "CLM" + 1
PUBLISHED = Counter("clm_outbox_published_total", "Outbox records published to Kafka")
BACKLOG = Gauge("clm_outbox_backlog_records", "Outbox records not yet published")


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        poll_s: float = 0.1,
        batch: int = 5000,
        backlog_every_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.producer = producer
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
            locked = (
                await conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": RELAY_LOCK_ID}
                )
            ).scalar_one()
            if not locked:
                return 0
            rows = (await conn.execute(_PENDING, {"n": self.batch})).all()
            if not rows:
                BACKLOG.set(0)
                return 0
            await self._publish(rows)
            if batches := [r.id for r in rows if r.key is None]:
                await conn.execute(_DELETE, {"ids": batches})
            if legacy := [r.id for r in rows if r.key is not None]:
                await conn.execute(_DELETE_LEGACY, {"ids": legacy})
            sent = int(sum(r.records for r in rows))
            now = time.monotonic()
            if now - self._backlog_at >= self.backlog_every_s:  # a count is a scan: not per batch
                self._backlog_at = now
                BACKLOG.set((await conn.execute(_BACKLOG)).scalar_one())
        PUBLISHED.inc(sent)
        return sent

    async def _publish(self, rows: Sequence[Any]) -> None:
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
            records = (
                unpack_records(r.payload, r.records)
                if r.key is None
                else [(r.key.encode(), r.payload)]  # a row of an engine before 0009
            )
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
    Python, a few microseconds a key; customers recur, so it is cached."""
    return int(murmur2(key)) & 0x7FFFFFFF


# The oldest rows of both tables (ids from one sequence), as many as hold ``n`` records (and
# always the first): the window sums the records before each row over at most ``n`` rows (a
# row holds at least one record). ``key`` is set on the one-record rows of ``outbox``.
_PENDING = text(
    "SELECT id, topic, records, key, payload FROM ("
    " SELECT *, sum(records) OVER (ORDER BY id) - records AS before FROM ("
    "  (SELECT id, topic, records, NULL::text AS key, payload FROM outbox_batches"
    "   ORDER BY id LIMIT :n)"
    "  UNION ALL"
    "  (SELECT id, topic, 1, key, payload FROM outbox ORDER BY id LIMIT :n)"
    "  ORDER BY id LIMIT :n"
    " ) AS oldest"
    ") AS placed WHERE before < :n ORDER BY id"
)
_DELETE = text("DELETE FROM outbox_batches WHERE id = ANY(CAST(:ids AS BIGINT[]))")
_DELETE_LEGACY = text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS BIGINT[]))")
_BACKLOG = text(
    "SELECT (SELECT coalesce(sum(records), 0) FROM outbox_batches) + (SELECT count(*) FROM outbox)"
)
