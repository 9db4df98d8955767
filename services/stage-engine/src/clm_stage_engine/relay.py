"""Outbox relay: publishes committed outbox rows to ``clm.lifecycle.v1``, in order, at least once.

One relay at a time holds a transaction-scoped advisory lock, so with several replicas rows of
one customer are never published out of order. A row is deleted only after the broker
acknowledged it (acks=all); a crash in between republishes it, and consumers dedupe by the
record's stable ``record_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge
from sqlalchemy import delete, func, select, text
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
        batch: int = 1000,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.poll_s = poll_s
        self.batch = batch
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
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload)
                    .order_by(outbox.c.id)
                    .limit(self.batch)
                )
            ).all()
            if not rows:
                BACKLOG.set(0)
                return 0
            futures = [
                await self.producer.send(r.topic, value=r.payload, key=r.key.encode()) for r in rows
            ]
            await asyncio.gather(*futures)
            await conn.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows])))
            remaining = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
            BACKLOG.set(remaining)
        PUBLISHED.inc(len(rows))
        return len(rows)
