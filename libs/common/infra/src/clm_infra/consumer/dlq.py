"""Poison records to the dead-letter topic, with their reason, under a limit.

A run of more than ``max_consecutive_poison`` poison records (none applied in between) says
something is wrong beyond single bad records (a broken deployment, a changed contract): the
loop stops loudly instead of draining the topic into the DLQ (arroyo's ``DlqLimit``).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from clm_infra.consumer.handler import Poison
from clm_infra.consumer.metrics import DLQ, POISON

log = logging.getLogger(__name__)


class PoisonLimitExceeded(RuntimeError):
    """Too many poison records in a row: something is wrong beyond single bad records."""


def headers_of(poison: Poison, group_id: str) -> list[tuple[str, bytes]]:
    """Why and where from, as the dead letter's headers (the record's key and value are kept)."""
    rec = poison.record
    return [
        ("reason", poison.reason[:1000].encode()),
        ("original_topic", str(rec.topic).encode()),
        ("original_partition", str(rec.partition).encode()),
        ("original_offset", str(rec.offset).encode()),
        ("consumer_group", group_id.encode()),
    ]


class DeadLetters:
    """Sends poison to ``dlq_topic`` and counts the run of poison against the limit.

    ``stopping`` is set when the limit is passed, before it is raised: the loops sharing it
    (a process's lanes) apply nothing more, so the partitions never move to a sibling that
    would go on pouring the run into the DLQ."""

    def __init__(
        self,
        *,
        producer: AIOKafkaProducer | None,
        dlq_topic: str,
        source_topic: str,
        group_id: str,
        limit: int,
        stopping: asyncio.Event,
    ) -> None:
        self._producer = producer
        self._dlq_topic = dlq_topic
        self._source_topic = source_topic
        self._group_id = group_id
        self._limit = limit
        self._stopping = stopping
        self.consecutive = 0  # poison records in a row, none applied in between

    async def send(self, poison: list[Poison], *, applied: int = 0, kind: str = "handler") -> None:
        """Send ``poison`` (acknowledged before this returns); ``applied``: the good records
        of the same batch; ``kind``: why, a bounded metric label."""
        self._count(poison, applied)
        if not poison:
            return
        if self._producer is None:
            raise RuntimeError("poison record and no DLQ producer")
        futures = []
        for p in poison:
            rec = p.record
            futures.append(
                await self._producer.send(
                    self._dlq_topic,
                    value=rec.value,
                    key=rec.key,
                    headers=headers_of(p, self._group_id),
                )
            )
            log.warning(
                "record sent to the DLQ",
                extra={"partition": rec.partition, "offset": rec.offset, "reason": p.reason},
            )
        await asyncio.gather(*futures)
        DLQ.labels(self._group_id).inc(len(poison))
        POISON.labels(self._group_id, kind).inc(len(poison))

    def _count(self, poison: list[Poison], applied: int) -> None:
        """Extend or end the run of poison; past the limit, stop every loop sharing it."""
        if applied or not poison:  # good records in between: not a run of poison
            self.consecutive = 0
        if not poison:
            return
        self.consecutive += len(poison)
        if self.consecutive > self._limit:
            self._stopping.set()
            raise PoisonLimitExceeded(
                f"{self.consecutive} poison records in a row on {self._source_topic}: stopping"
            )
