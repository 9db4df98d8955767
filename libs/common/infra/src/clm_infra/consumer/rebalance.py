"""The partitions the group gives the loop, each sought to the offset stored in Postgres.

On assignment every partition starts where Postgres says (Kafka's committed offsets are only a
hint); on revocation nothing of it stays the loop's. Both wait for the batch in flight (the
loop's batch lock), so a partition never changes hands in the middle of a transaction. While
idle, the loop follows stored offsets someone else moved (a replay reset them).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.consumer import stored_offsets
from clm_infra.consumer.metrics import STALLED
from clm_infra.consumer.positions import Positions

log = logging.getLogger(__name__)


def partition_key(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)


class Assignment:
    """Seeks, follows and forgets the loop's partitions, keeping its positions in step."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        engine: AsyncEngine,
        group_id: str,
        positions: Positions,
        backoff_s: float,
    ) -> None:
        self._consumer = consumer
        self._engine = engine
        self._group_id = group_id
        self._positions = positions
        self._backoff_s = backoff_s

    async def seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        """Point each partition at the offset stored in Postgres (retrying while it is down)."""
        keys = sorted(partition_key(tp) for tp in partitions)
        stored = await stored_offsets.read_until_up(
            self._engine, self._group_id, keys, self._backoff_s
        )
        self._positions.assigned(stored, keys, time.monotonic())
        for tp in partitions:
            offset = stored.get(partition_key(tp))
            if offset is not None:
                self._consumer.seek(tp, offset)
        log.info(
            "partitions assigned",
            extra={"group": self._group_id, "partitions": keys, "stored": stored},
        )

    async def recheck_stored(self) -> None:
        """While idle: follow stored offsets someone else moved (a replay reset them)."""
        assigned = self._consumer.assignment()
        if not assigned:
            return
        try:
            stored = await stored_offsets.read(
                self._engine, self._group_id, (partition_key(tp) for tp in assigned)
            )
        except Exception:
            log.warning("cannot re-read stored offsets", exc_info=True)
            return
        expected = self._positions.expected
        moved = {
            tp
            for tp in assigned
            if stored.get(partition_key(tp)) != expected.get(partition_key(tp))
        }
        if moved:
            log.info("stored offsets moved; following them", extra={"partitions": len(moved)})
            await self.seek_to_stored(moved)

    def forget(self, tp: TopicPartition) -> None:
        """A partition revoked: nothing of it is this loop's any more."""
        self._positions.forget(partition_key(tp))
        STALLED.labels(self._group_id, str(tp.partition)).set(0)


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Applies the group's rebalances to ``assignment`` between batches (under ``lock``)."""

    def __init__(self, assignment: Assignment, lock: asyncio.Lock) -> None:
        self._assignment = assignment
        self._lock = lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in revoked:
                self._assignment.forget(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            await self._assignment.seek_to_stored(assigned)
