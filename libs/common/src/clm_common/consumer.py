"""The micro-batch consumer loop both the stage engine and the metrics service run.

Commit policy (explicit, as arroyo and aiokafka's local-state example teach):

* fetch up to ``max_records`` or wait ``max_wait_ms``, whichever first;
* apply the batch in ONE Postgres transaction on the loop's own long-lived connection: the
  handler's effects and the compare-and-set of the consumed offsets (:mod:`clm_common.offsets`)
  commit together, or nothing does. A process may run several loops side by side (the stage
  engine's lanes), each its own member of the consumer group with its own partitions, as Kafka
  Streams runs stream threads: while one loop's statements run in Postgres another folds its
  records, and none waits for the others between batches;
* records that cannot be decoded or applied go to the dead-letter topic (acknowledged before
  the transaction commits) with their reason in headers, and the partition moves on; more
  than ``max_consecutive_poison`` poison records in a row stop the loop loudly;
* on assignment, seek every partition to the offset stored in Postgres; on revocation, wait
  for the batch in flight; Kafka's committed offsets are only a hint, sent after the commit
  without the next batch waiting for them;
* a failing batch (Postgres down, a fenced offset) is rolled back, its partitions are sought
  back to the stored offsets, and it is retried after a backoff: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_common.kafka import make_consumer, make_producer
from clm_common.offsets import OffsetAdvance, OffsetFenced, advance_offsets, load_offsets
from clm_common.settings import CommonSettings

log = logging.getLogger(__name__)

BATCHES = Counter("clm_consumer_batches_total", "Batches applied", ["group", "outcome"])
RECORDS = Counter("clm_consumer_records_total", "Records consumed", ["group", "outcome"])
BATCH_SECONDS = Histogram(
    "clm_consumer_batch_duration_seconds",
    "Time to apply one batch (transaction included)",
    ["group"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "clm_consumer_batch_records",
    "Records per applied batch",
    ["group"],
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000),
)
LAG = Gauge("clm_consumer_lag_records", "Records behind the log end", ["group", "partition"])
DLQ = Counter("clm_dlq_records_total", "Records sent to the dead-letter topic", ["group"])


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the handler could not use, and why."""

    record: Any
    reason: str


@dataclass(slots=True)
class BatchResult:
    """What a handler reports about one batch (poison goes to the DLQ)."""

    poison: list[Poison] = field(default_factory=list)
    applied: int = 0
    # called once the batch's transaction committed (never if it rolled back): for what a
    # handler may only believe of the database after the commit (rows it wrote, as written)
    committed: Callable[[], None] | None = None


class Conflict(RuntimeError):
    """A concurrent transaction changed what the batch read (or claimed first): the batch
    rolled back and is retried at once, reading again (backoff only if it conflicts again)."""


Handler = Callable[[AsyncConnection, Sequence[Any]], Awaitable[BatchResult]]


class PoisonLimitExceeded(RuntimeError):
    """Too many poison records in a row: something is wrong beyond single bad records."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_records: int = 500
    max_wait_ms: int = 200
    retry_backoff_s: float = 1.0
    max_consecutive_poison: int = 1000
    idle_recheck_s: float = 5.0
    hint_interval_s: float = 1.0
    fill_ms: int = 0  # once a batch has records, wait up to this long for more
    # statements run once on the loop's connection (its session settings)
    session: tuple[str, ...] = ()
    # awaited before each fetch: what the batches feed (the stage engine's outbox relay)
    # holds the loop here until it has caught up, so it never falls behind without bound
    gate: Callable[[], Awaitable[None]] | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._loop.batch_lock:
            for tp in revoked:
                self._loop.expected.pop((tp.topic, tp.partition), None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._loop.batch_lock:
            await self._loop.seek_to_stored(assigned)


class BatchConsumer:
    """Runs ``handler`` over micro-batches of ``topic`` with offsets stored in Postgres."""

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
        self.expected: dict[tuple[str, int], int | None] = {}
        self.consecutive_poison = 0
        self.last_batch_at: float | None = None
        # shared by the loops of one process (its lanes): stopping one, or one stopping at its
        # poison limit, stops them all, before its partitions can move to a sibling
        self._stopping = lanes_stop if lanes_stop is not None else asyncio.Event()
        self._hints: dict[TopicPartition, OffsetAndMetadata] = {}
        self._hint_task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None  # the loop's own, kept between batches

    async def seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        """Point each partition at the offset stored in Postgres (retrying while it is down)."""
        keys = sorted((tp.topic, tp.partition) for tp in partitions)
        while True:
            try:
                async with self.engine.connect() as conn:
                    stored = await load_offsets(conn, self.group_id, keys)
                break
            except Exception:
                log.warning("cannot read stored offsets; retrying", exc_info=True)
                await asyncio.sleep(self.policy.retry_backoff_s)
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            self.expected[(tp.topic, tp.partition)] = offset
            if offset is not None:
                self.consumer.seek(tp, offset)
        log.info(
            "partitions assigned",
            extra={"group": self.group_id, "partitions": keys, "stored": stored},
        )

    def stop(self) -> None:
        self._stopping.set()

    async def recheck_stored(self) -> None:
        """While idle: follow stored offsets someone else moved (a replay reset them)."""
        assigned = self.consumer.assignment()
        if not assigned:
            return
        try:
            async with self.engine.connect() as conn:
                stored = await load_offsets(
                    conn, self.group_id, sorted((tp.topic, tp.partition) for tp in assigned)
                )
        except Exception:
            log.warning("cannot re-read stored offsets", exc_info=True)
            return
        moved = {
            tp
            for tp in assigned
            if stored.get((tp.topic, tp.partition)) != self.expected.get((tp.topic, tp.partition))
        }
        if moved:
            log.info("stored offsets moved; following them", extra={"partitions": len(moved)})
            await self.seek_to_stored(moved)

    async def run(self) -> None:
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        try:
            await self._run()
        finally:
            await self._finish_hints()
            await self.close_connection()

    async def _run(self) -> None:
        last_check = time.monotonic()
        while not self._stopping.is_set():
            if self.policy.gate is not None:
                await self.policy.gate()
            batches = await self.consumer.getmany(
                timeout_ms=self.policy.max_wait_ms, max_records=self.policy.max_records
            )
            records = [r for tp_records in batches.values() for r in tp_records]
            if records and self.policy.fill_ms:
                records += await self._fill(len(records))
            if not records:
                self._update_lag()
                if time.monotonic() - last_check >= self.policy.idle_recheck_s:
                    last_check = time.monotonic()
                    async with self.batch_lock:
                        await self.recheck_stored()
                continue
            async with self.batch_lock:
                await self._apply_with_retry(records)
            self._update_lag()

    async def _fill(self, have: int) -> list[Any]:
        """More records for a batch that has ``have``, for up to ``fill_ms``: fewer, fuller
        batches where freshness of a fraction of a second does not matter (each batch has
        its fixed cost: the transaction, the offsets, statements whose cost hardly depends
        on the rows)."""
        deadline = time.monotonic() + self.policy.fill_ms / 1000
        more: list[Any] = []
        while have + len(more) < self.policy.max_records and not self._stopping.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            batches = await self.consumer.getmany(
                timeout_ms=left_ms, max_records=self.policy.max_records - have - len(more)
            )
            more += [r for tp_records in batches.values() for r in tp_records]
        return more

    async def _apply_with_retry(self, records: list[Any]) -> None:
        conflicts = 0
        while not self._stopping.is_set():
            fresh = [
                r
                for r in records
                if (r.topic, r.partition) in self.expected
                and r.offset >= (self.expected[(r.topic, r.partition)] or 0)
            ]
            if not fresh:
                return
            started = time.perf_counter()
            try:
                await self._apply(fresh)
            except PoisonLimitExceeded:
                raise
            except OffsetFenced as exc:
                BATCHES.labels(self.group_id, "fenced").inc()
                log.warning("batch fenced; reloading offsets", extra={"why": str(exc)})
                await self.seek_to_stored(self._partitions_of(fresh))
                return
            except Conflict as exc:
                BATCHES.labels(self.group_id, "conflict").inc()
                conflicts += 1
                log.info(
                    "batch conflicted; rolled back, retrying",
                    extra={"n": len(fresh), "why": str(exc), "conflicts": conflicts},
                )
                if conflicts > 1:
                    await asyncio.sleep(self.policy.retry_backoff_s)
                continue
            except Exception:
                BATCHES.labels(self.group_id, "failed").inc()
                log.exception("batch failed; rolled back, retrying", extra={"n": len(fresh)})
                await asyncio.sleep(self.policy.retry_backoff_s)
                continue
            BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
            BATCH_SIZE.labels(self.group_id).observe(len(fresh))
            BATCHES.labels(self.group_id, "ok").inc()
            self.last_batch_at = time.monotonic()
            return
        # stopping mid-retry: the stored offsets stay where they were, so nothing is lost;
        # the next owner of these partitions seeks to them

    @staticmethod
    def _partitions_of(records: list[Any]) -> set[TopicPartition]:
        return {TopicPartition(r.topic, r.partition) for r in records}

    async def _apply(self, records: list[Any]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in records:  # a partition's records come in offset order: keep its last
            last[(r.topic, r.partition)] = r.offset
        advances = {
            key: OffsetAdvance(key[0], key[1], self.expected[key], offset + 1)
            for key, offset in last.items()
        }
        conn = await self._connection()
        try:
            async with conn.begin():
                await advance_offsets(conn, self.group_id, list(advances.values()))
                result = await self.handler(conn, records)
                await self._dead_letter(result.poison, applied=result.applied)
        except BaseException:
            await self.close_connection()
            raise
        if result.committed is not None:
            result.committed()
        for key, adv in advances.items():
            self.expected[key] = adv.next_offset
        RECORDS.labels(self.group_id, "applied").inc(result.applied)
        RECORDS.labels(self.group_id, "poison").inc(len(result.poison))
        RECORDS.labels(self.group_id, "skipped").inc(
            len(records) - result.applied - len(result.poison)
        )
        self._commit_hint(
            {
                TopicPartition(t, p): OffsetAndMetadata(a.next_offset, "")
                for (t, p), a in advances.items()
            }
        )

    async def _connection(self) -> AsyncConnection:
        """The loop's own connection, kept between batches (no checkout, ping or reset per
        batch). Dropped on any failure, so a broken one is never reused."""
        if self._conn is None:
            conn = await self.engine.connect()
            try:
                for statement in self.policy.session:
                    await conn.exec_driver_sql(statement)
                await conn.commit()
            except BaseException:
                await conn.invalidate()
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def close_connection(self) -> None:
        """Close the loop's connection (discarded, not pooled: it carries ``session``); the
        next batch opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    def _commit_hint(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Tell Kafka the consumed offsets, off the batch's path: they are only a hint (the
        truth is in Postgres, sought to on assignment), so the next batch does not wait for the
        group coordinator's round trip. One commit in flight at most; offsets that arrive
        meanwhile go in the next one (newer offsets replace older ones per partition)."""
        self._hints.update(offsets)
        if self._hint_task is None or self._hint_task.done():
            self._hint_task = asyncio.create_task(self._send_hints(), name="offset-hints")

    async def _send_hints(self) -> None:
        """At most one commit per ``hint_interval_s``: a commit is a round trip to the group
        coordinator and its CPU on both sides, per batch when batches are small."""
        while self._hints:
            offsets, self._hints = self._hints, {}
            with contextlib.suppress(Exception):  # e.g. revoked meanwhile: a hint, no harm
                await self.consumer.commit(offsets)
            if self._hints or not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.policy.hint_interval_s)

    async def _finish_hints(self) -> None:
        task = self._hint_task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=5)

    async def _dead_letter(self, poison: list[Poison], *, applied: int = 0) -> None:
        if applied or not poison:  # good records in between: not a run of poison
            self.consecutive_poison = 0
        if not poison:
            return
        self.consecutive_poison += len(poison)
        if self.consecutive_poison > self.policy.max_consecutive_poison:
            self._stopping.set()  # the sibling lanes apply nothing more either
            raise PoisonLimitExceeded(
                f"{self.consecutive_poison} poison records in a row on {self.topic}: stopping"
            )
        if self.dlq_producer is None:
            raise RuntimeError("poison record and no DLQ producer")
        futures = []
        for p in poison:
            rec = p.record
            headers = [
                ("reason", p.reason[:1000].encode()),
                ("original_topic", str(rec.topic).encode()),
                ("original_partition", str(rec.partition).encode()),
                ("original_offset", str(rec.offset).encode()),
                ("consumer_group", self.group_id.encode()),
            ]
            futures.append(
                await self.dlq_producer.send(
                    self.dlq_topic, value=rec.value, key=rec.key, headers=headers
                )
            )
            log.warning(
                "record sent to the DLQ",
                extra={"partition": rec.partition, "offset": rec.offset, "reason": p.reason},
            )
        await asyncio.gather(*futures)
        DLQ.labels(self.group_id).inc(len(poison))

    def _update_lag(self) -> None:
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            position = self.expected.get((tp.topic, tp.partition))
            if highwater is not None:
                LAG.labels(self.group_id, str(tp.partition)).set(
                    max(0, highwater - (position or 0))
                )


async def run_batch_consumer(
    settings: CommonSettings,
    engine: AsyncEngine,
    *,
    name: str,
    topic: str,
    group_id: str,
    handler: Handler,
    policy: BatchPolicy,
    register: Callable[[BatchConsumer | None], None],
    stopping: asyncio.Event,
    lanes_stop: asyncio.Event | None = None,
) -> None:
    """One supervised attempt: build the consumer and its DLQ producer, run the loop until it
    stops or fails, close both. ``register`` gets the running loop (to stop it on shutdown),
    then ``None``."""
    producer = make_producer(settings, client_id=f"{name}-dlq")
    consumer = make_consumer(
        settings, group_id=group_id, client_id=name, max_poll_records=policy.max_records
    )
    try:
        await producer.start()
        await consumer.start()
        loop = BatchConsumer(
            consumer=consumer,
            engine=engine,
            topic=topic,
            group_id=group_id,
            handler=handler,
            dlq_producer=producer,
            dlq_topic=settings.topic_dlq,
            policy=policy,
            lanes_stop=lanes_stop,
        )
        register(loop)
        if not stopping.is_set():
            await loop.run()
    finally:
        register(None)
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
