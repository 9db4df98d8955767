"""Outbox relay: publishes committed outbox rows to ``clm.lifecycle.v1``, in order, at least once.

One relay at a time holds a transaction-scoped advisory lock, so with several replicas rows of
one customer are never published out of order. A row is deleted only after the broker
acknowledged it (acks=all); a crash in between republishes it, and consumers dedupe by the
record's stable ``record_id``.
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
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.schema import outbox

log = logging.getLogger(__name__)

RELAY_LOCK_ID = 0x434C4D01  # "CLM" + 1
PUBLISHED = Counter("clm_outbox_published_total", "Outbox rows published to Kafka")
BACKLOG = Gauge("clm_outbox_backlog_rows", "Outbox rows not yet published")


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
        """Publish up to ``batch`` rows; return how many went out."""
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
            await conn.execute(_DELETE, {"ids": [r.id for r in rows]})
            now = time.monotonic()
            if now - self._backlog_at >= self.backlog_every_s:  # a count is a scan: not per batch
                self._backlog_at = now
                BACKLOG.set((await conn.execute(_BACKLOG)).scalar_one())
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def _publish(self, rows: Sequence[Any]) -> None:
        """Send the rows in outbox order, whole batches per partition, and wait for the acks.

        Each row goes to the partition ``send()`` would pick for its key (the producer's
        default partitioner, :func:`key_hash`); building the batches here saves a future and
        a lookup per record.
        """
        partitions: dict[str, list[int]] = {}
        open_batches: dict[tuple[str, int], BatchBuilder] = {}
        futures: list[asyncio.Future[Any]] = []
        for r in rows:
            if r.topic not in partitions:
                partitions[r.topic] = sorted(await self.producer.partitions_for(r.topic))
            key = r.key.encode()
            choices = partitions[r.topic]
            tp = (r.topic, choices[key_hash(r.key) % len(choices)])
            batch = open_batches.get(tp)
            if batch is None:
                batch = open_batches[tp] = self.producer.create_batch()
            if batch.append(key=key, value=r.payload, timestamp=None) is None:  # full
                futures.append(await self.producer.send_batch(batch, tp[0], partition=tp[1]))
                batch = open_batches[tp] = self.producer.create_batch()
                if batch.append(key=key, value=r.payload, timestamp=None) is None:
                    raise ValueError(f"outbox row {r.id} does not fit in a Kafka batch")
        for (topic, partition), batch in open_batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)


@functools.lru_cache(maxsize=1 << 16)
def key_hash(key: str) -> int:
    """The default partitioner's hash of a record key (Kafka's murmur2, positive): the
    partition is ``partitions[key_hash(key) % len(partitions)]``. aiokafka's murmur2 is pure
    Python, a few microseconds a key; customers recur, so it is cached."""
    return int(murmur2(key.encode())) & 0x7FFFFFFF


_PENDING = (
    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload)
    .order_by(outbox.c.id)
    .limit(bindparam("n"))
)
_DELETE = text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS BIGINT[]))")
_BACKLOG = select(func.count()).select_from(outbox)
