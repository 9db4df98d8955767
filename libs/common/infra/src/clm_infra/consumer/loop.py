"""The loop itself: fetch a batch, apply it, again, until stopped.

:class:`BatchConsumer` only wires the steps together, each in its own module: the batcher
(:mod:`.batching`), the retrying apply (:mod:`.retry`, :mod:`.bisection`), the batch's
transaction (:mod:`.transactions`, :mod:`.stored_offsets`, :mod:`.dlq`), the assignment
(:mod:`.rebalance`), Kafka's offset hints (:mod:`.commit_hints`) and the stall watch
(:mod:`.stalls`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_infra.consumer.batching import Batcher
from clm_infra.consumer.commit_hints import CommitHints
from clm_infra.consumer.connection import LoopConnection
from clm_infra.consumer.dlq import DeadLetters
from clm_infra.consumer.handler import Handler, Poison
from clm_infra.consumer.policy import BatchPolicy
from clm_infra.consumer.positions import Key, Positions
from clm_infra.consumer.rebalance import Assignment, RebalanceListener
from clm_infra.consumer.retry import RetryingApply
from clm_infra.consumer.stalls import StallWatch
from clm_infra.consumer.transactions import BatchWriter
from clm_infra.failures import Failure
from clm_infra.stall import Stall


class BatchConsumer:
    """Runs ``handler`` over micro-batches of ``topic`` with offsets stored in Postgres.

    ``lanes_stop`` is shared by the loops of one process (its lanes): stopping one, or one
    stopping at its poison limit, stops them all, before its partitions can move to a
    sibling."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        engine: AsyncEngine,
        topic: str,
        group_id: str,
        handler: Handler,
        dlq_producer: AIOKafkaProducer | None,
        dlq_topic: str,
        policy: BatchPolicy,
        lanes_stop: asyncio.Event | None = None,
    ) -> None:
        self.consumer = consumer
        self.engine = engine
        self.topic = topic
        self.group_id = group_id
        self.handler = handler
        self.dlq_producer = dlq_producer
        self.dlq_topic = dlq_topic
        self.policy = policy
        self.batch_lock = asyncio.Lock()
        self._stopping = lanes_stop if lanes_stop is not None else asyncio.Event()
        self._positions = Positions()
        self._build_transaction_steps()
        self._build_loop_steps()

    def _build_transaction_steps(self) -> None:
        """The steps of a batch's transaction, and what follows its commit."""
        policy, stopping = self.policy, self._stopping
        self._connection = LoopConnection(self.engine, policy.session)
        self._hints = CommitHints(self.consumer, policy.hint_interval_s, stopping)
        self._dead_letters = DeadLetters(
            producer=self.dlq_producer,
            dlq_topic=self.dlq_topic,
            source_topic=self.topic,
            group_id=self.group_id,
            limit=policy.max_consecutive_poison,
            stopping=stopping,
        )
        self._writer = BatchWriter(
            group_id=self.group_id,
            handler=self.handler,
            connection=self._connection,
            positions=self._positions,
            dead_letters=self._dead_letters,
            hints=self._hints,
        )

    def _build_loop_steps(self) -> None:
        """The steps around it: fetching, retrying, the assignment, the stall watch."""
        policy, stopping = self.policy, self._stopping
        self._assignment = Assignment(
            consumer=self.consumer,
            engine=self.engine,
            group_id=self.group_id,
            positions=self._positions,
            backoff_s=policy.retry_backoff_s,
        )
        self._retrying = RetryingApply(
            group_id=self.group_id,
            policy=policy,
            stopping=stopping,
            positions=self._positions,
            writer=self._writer,
            seek=self._assignment.seek_to_stored,
        )
        self._batcher = Batcher(self.consumer, policy, stopping)
        self._stall_watch = StallWatch(
            consumer=self.consumer,
            group_id=self.group_id,
            positions=self._positions,
            stall_s=policy.stall_s,
            stopping=stopping,
        )

    @property
    def expected(self) -> dict[Key, int | None]:
        """Per partition, the next offset to apply (as stored in Postgres)."""
        return self._positions.expected

    @expected.setter
    def expected(self, value: dict[Key, int | None]) -> None:
        self._positions.expected = value

    @property
    def progress_at(self) -> dict[Key, float]:
        """Per partition, when the loop last made progress on it (monotonic)."""
        return self._positions.progress_at

    @property
    def consecutive_poison(self) -> int:
        return self._dead_letters.consecutive

    @property
    def last_batch_at(self) -> float | None:
        return self._retrying.last_batch_at

    def stop(self) -> None:
        self._stopping.set()

    async def seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        await self._assignment.seek_to_stored(partitions)

    async def recheck_stored(self) -> None:
        await self._assignment.recheck_stored()

    def forget(self, tp: TopicPartition) -> None:
        self._assignment.forget(tp)

    def stalls(self, now: float | None = None) -> list[Stall]:
        """The assigned partitions stalled at ``now`` (see :class:`.stalls.StallWatch`)."""
        return self._stall_watch.stalls(now)

    async def close_connection(self) -> None:
        await self._connection.close()

    async def run(self) -> None:
        self.consumer.subscribe(
            [self.topic], listener=RebalanceListener(self._assignment, self.batch_lock)
        )
        self._stall_watch.start()
        try:
            await self._run()
        finally:
            await self._stall_watch.close()
            await self._hints.finish()
            await self.close_connection()

    async def _run(self) -> None:
        last_check = time.monotonic()
        while not self._stopping.is_set():
            records = await self._batcher.next()
            self._positions.saw(records)
            if not records:
                self._stall_watch.update_lag()
                if time.monotonic() - last_check >= self.policy.idle_recheck_s:
                    last_check = time.monotonic()
                    async with self.batch_lock:
                        await self.recheck_stored()
                continue
            async with self.batch_lock:
                await self._apply_with_retry(records)
            self._stall_watch.update_lag()

    async def _apply_with_retry(self, records: list[Any]) -> None:
        await self._retrying.apply(records)

    async def _apply(self, records: list[Any]) -> None:
        await self._writer.apply(records)

    async def _set_aside(self, record: Any, failure: Failure) -> None:
        await self._writer.set_aside(record, failure)

    async def _dead_letter(
        self, poison: list[Poison], *, applied: int = 0, kind: str = "handler"
    ) -> None:
        await self._dead_letters.send(poison, applied=applied, kind=kind)
