"""One batch, one Postgres transaction: the handler's effects, the dead letters and the
compare-and-set of the consumed offsets commit together, or nothing does."""

from __future__ import annotations

import time
from typing import Any

from clm_infra.consumer import stored_offsets
from clm_infra.consumer.commit_hints import CommitHints, hints_for
from clm_infra.consumer.connection import LoopConnection
from clm_infra.consumer.dlq import DeadLetters
from clm_infra.consumer.handler import BatchResult, Handler, Poison
from clm_infra.consumer.metrics import RECORDS
from clm_infra.consumer.positions import Positions
from clm_infra.failures import Failure


class BatchWriter:
    """Writes batches on the loop's connection; after each commit, moves the loop's
    positions on and hints Kafka. Any failure rolls back and drops the connection."""

    def __init__(
        self,
        *,
        group_id: str,
        handler: Handler,
        connection: LoopConnection,
        positions: Positions,
        dead_letters: DeadLetters,
        hints: CommitHints,
    ) -> None:
        self._group_id = group_id
        self._handler = handler
        self._connection = connection
        self._positions = positions
        self._dead_letters = dead_letters
        self._hints = hints

    async def apply(self, records: list[Any]) -> None:
        """Apply ``records`` (not applied yet) as one batch."""
        advances = self._positions.advances_for(records)
        conn = await self._connection.get()
        try:
            async with conn.begin():
                await stored_offsets.advance(conn, self._group_id, advances.values())
                result = await self._handler(conn, records)
                await self._dead_letters.send(result.poison, applied=result.applied)
        except BaseException:
            await self._connection.close()
            raise
        if result.committed is not None:
            result.committed()
        self._positions.advanced(advances.values(), time.monotonic())
        self._count(result, len(records))
        self._hints.send(hints_for(advances.values()))

    async def set_aside(self, record: Any, failure: Failure) -> None:
        """Dead-letter ``record`` (it fails any batch it is in) in a transaction that
        advances its partition's offset past it."""
        advances = self._positions.advances_for([record])
        conn = await self._connection.get()
        try:
            async with conn.begin():
                await stored_offsets.advance(conn, self._group_id, advances.values())
                await self._dead_letters.send([Poison(record, failure.reason)], kind=failure.kind)
        except BaseException:
            await self._connection.close()
            raise
        self._positions.advanced(advances.values(), time.monotonic())
        RECORDS.labels(self._group_id, "poison").inc()
        self._hints.send(hints_for(advances.values()))

    def _count(self, result: BatchResult, records: int) -> None:
        RECORDS.labels(self._group_id, "applied").inc(result.applied)
        RECORDS.labels(self._group_id, "poison").inc(len(result.poison))
        RECORDS.labels(self._group_id, "skipped").inc(records - result.applied - len(result.poison))
