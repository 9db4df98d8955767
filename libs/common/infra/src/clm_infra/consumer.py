"""The micro-batch consumer loop both the stage engine and the metrics service run.

Commit policy (explicit, as arroyo and aiokafka's local-state example teach):

* fetch up to ``max_records`` or wait ``max_wait_ms``, whichever first;
* apply the batch in ONE Postgres transaction on the loop's own long-lived connection: the
  handler's effects and the compare-and-set of the consumed offsets (:mod:`clm_infra.offsets`)
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
* a failing batch is rolled back. If the failure is one retrying cannot fix
  (:mod:`clm_infra.failures`: a value Postgres refuses, a constraint, a program limit, a
  deterministic Python error), the batch is bisected: its first half, then its second, each
  its own transaction with its own offset advance, until the records that fail alone are
  found; each goes to the dead-letter topic with the failure as its reason, in a transaction
  that advances the offset past it (and counts towards ``max_consecutive_poison``), and the
  rest is applied in order. Any other failure (Postgres down, a serialization failure, a
  deadlock, a lock, an unknown error) is retried after a backoff: nothing is skipped;
* a partition with lag that has not advanced for ``stall_s`` seconds is stalled
  (:mod:`clm_infra.stall`): the ``clm_consumer_stalled`` gauge says so and the services'
  readiness fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clm_infra.failures import Failure, classify
from clm_infra.kafka import make_consumer, make_producer
from clm_infra.offsets import OffsetAdvance, OffsetFenced, advance_offsets, load_offsets
from clm_infra.settings import CommonSettings
from clm_infra.stall import Progress, Stall, describe, stalled

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
BISECTED = Counter(
    "clm_consumer_bisected_batches_total",
    "Batches split to find the records that fail them (a failure retrying cannot fix)",
    ["group"],
)
POISON = Counter(
    "clm_consumer_poison_total",
    "Records dead-lettered, by why: undecodable/handler (the handler said so), or the class "
    "of the failure they caused alone (data, integrity, limit, python)",
    ["group", "kind"],
)
STALLED = Gauge(
    "clm_consumer_stalled",
    "1 while a partition has lag and its offset has not advanced for the stall limit",
    ["group", "partition"],
)


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
    # a partition with lag whose offset has not advanced for this long is stalled (None: never)
    stall_s: float | None = None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: BatchConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._loop.batch_lock:
            for tp in revoked:
                self._loop.forget(tp)

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
        # per partition: when the loop last made progress on it (monotonic), and the end of
        # the log as far as fetched records show (the lag while a batch is stuck)
        self.progress_at: dict[tuple[str, int], float] = {}
        self._seen_end: dict[tuple[str, int], int] = {}
        self._watch_task: asyncio.Task[None] | None = None

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
        now = time.monotonic()
        for tp in partitions:
            offset = stored.get((tp.topic, tp.partition))
            self.expected[(tp.topic, tp.partition)] = offset
            self.progress_at[(tp.topic, tp.partition)] = now
            if offset is not None:
                self.consumer.seek(tp, offset)
        log.info(
            "partitions assigned",
            extra={"group": self.group_id, "partitions": keys, "stored": stored},
        )

    def stop(self) -> None:
        self._stopping.set()

    def forget(self, tp: TopicPartition) -> None:
        """A partition revoked: nothing of it is this loop's any more."""
        key = (tp.topic, tp.partition)
        self.expected.pop(key, None)
        self.progress_at.pop(key, None)
        self._seen_end.pop(key, None)
        STALLED.labels(self.group_id, str(tp.partition)).set(0)

    def stalls(self, now: float | None = None) -> list[Stall]:
        """The assigned partitions stalled at ``now`` (monotonic; default: the clock), with
        the ``clm_consumer_stalled`` gauge set to match. Never stalled without ``stall_s``."""
        if self.policy.stall_s is None:
            return []
        now = time.monotonic() if now is None else now
        progress: dict[int, Progress] = {}
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key not in self.progress_at:
                continue  # not sought to its stored offset yet
            end = max(self.consumer.highwater(tp) or 0, self._seen_end.get(key, 0))
            progress[tp.partition] = Progress(
                max(0, end - (self.expected.get(key) or 0)), self.progress_at[key]
            )
        found = stalled(progress, now=now, after_s=self.policy.stall_s)
        stuck = {s.partition for s in found}
        for partition in progress:
            STALLED.labels(self.group_id, str(partition)).set(1 if partition in stuck else 0)
        return found

    async def _watch_stalls(self, every_s: float) -> None:
        """Keep the gauge current while the loop itself may be stuck in a batch."""
        while not self._stopping.is_set():
            self.stalls()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every_s)

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
        if self.policy.stall_s is not None:
            every_s = min(5.0, max(0.1, self.policy.stall_s / 4))
            self._watch_task = asyncio.create_task(self._watch_stalls(every_s), name="stalls")
        try:
            await self._run()
        finally:
            if self._watch_task is not None:
                self._watch_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._watch_task
            for key in list(self.progress_at):
                STALLED.labels(self.group_id, str(key[1])).set(0)
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
            for r in records:
                key = (r.topic, r.partition)
                self._seen_end[key] = max(self._seen_end.get(key, 0), r.offset + 1)
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

    def _fresh(self, records: list[Any]) -> list[Any]:
        """The records not applied yet (at or past their partition's expected offset)."""
        return [
            r
            for r in records
            if (r.topic, r.partition) in self.expected
            and r.offset >= (self.expected[(r.topic, r.partition)] or 0)
        ]

    async def _apply_with_retry(self, records: list[Any]) -> None:
        """Apply ``records``; on a failure retrying cannot fix, bisect them (in order) down
        to the records that fail alone and set those aside. ``parts``: what is left to do,
        in order, each part a list of records (applied as one batch) or a record and the
        :class:`Failure` it caused alone (dead-lettered)."""
        conflicts = 0
        parts: list[list[Any] | tuple[Any, Failure]] = [records]
        split = False
        while parts and not self._stopping.is_set():
            part = parts[0]
            fresh = self._fresh([part[0]] if isinstance(part, tuple) else part)
            if not fresh:
                parts.pop(0)
                continue
            started = time.perf_counter()
            try:
                if isinstance(part, tuple):
                    await self._set_aside(fresh[0], part[1])
                else:
                    await self._apply(fresh)
            except PoisonLimitExceeded:
                raise
            except OffsetFenced as exc:
                BATCHES.labels(self.group_id, "fenced").inc()
                log.warning("batch fenced; reloading offsets", extra={"why": str(exc)})
                left = [r for p in parts for r in ([p[0]] if isinstance(p, tuple) else p)]
                await self.seek_to_stored(self._partitions_of(left))
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
            except Exception as exc:
                failure = classify(exc)
                if isinstance(part, tuple) or not failure.permanent:
                    BATCHES.labels(self.group_id, "failed").inc()
                    log.exception(
                        "batch failed; rolled back, retrying",
                        extra={"n": len(fresh), "reason": failure.reason},
                    )
                    await asyncio.sleep(self.policy.retry_backoff_s)
                    continue
                first, split = not split, True
                if first and len(fresh) == 1:
                    # a batch of one record failing: once more before it is set aside, so
                    # that every record dead-lettered failed twice (here, or in a larger
                    # batch and alone), and a race that broke a constraint once passes
                    BATCHES.labels(self.group_id, "failed").inc()
                    log.warning("a record failed; retrying it once", extra=vars_of(failure))
                    await asyncio.sleep(self.policy.retry_backoff_s)
                    continue
                BATCHES.labels(self.group_id, "bisected").inc()
                if first:
                    BISECTED.labels(self.group_id).inc()
                if len(fresh) == 1:
                    log.warning(
                        "a record fails alone; setting it aside",
                        extra={
                            "partition": fresh[0].partition,
                            "offset": fresh[0].offset,
                            "reason": failure.reason,
                        },
                    )
                    parts[0] = (fresh[0], failure)
                else:
                    log.warning(
                        "batch failed with what retrying cannot fix; bisecting",
                        extra={"n": len(fresh), "reason": failure.reason},
                    )
                    half = len(fresh) // 2
                    parts[0:1] = [fresh[:half], fresh[half:]]
                continue
            parts.pop(0)
            conflicts = 0
            if isinstance(part, tuple):
                continue
            BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
            BATCH_SIZE.labels(self.group_id).observe(len(fresh))
            BATCHES.labels(self.group_id, "ok").inc()
            self.last_batch_at = time.monotonic()
        # stopping mid-retry: the stored offsets stay where they were, so nothing is lost;
        # the next owner of these partitions seeks to them

    async def _set_aside(self, record: Any, failure: Failure) -> None:
        """Dead-letter ``record`` (it fails any batch it is in) in a transaction that advances
        its partition's offset past it."""
        key = (record.topic, record.partition)
        advance = OffsetAdvance(
            record.topic, record.partition, self.expected[key], record.offset + 1
        )
        conn = await self._connection()
        try:
            async with conn.begin():
                await advance_offsets(conn, self.group_id, [advance])
                await self._dead_letter([Poison(record, failure.reason)], kind=failure.kind)
        except BaseException:
            await self.close_connection()
            raise
        self.expected[key] = advance.next_offset
        self.progress_at[key] = time.monotonic()
        RECORDS.labels(self.group_id, "poison").inc()
        self._commit_hint(
            {
                TopicPartition(record.topic, record.partition): OffsetAndMetadata(
                    advance.next_offset, ""
                )
            }
        )

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
        now = time.monotonic()
        for key, adv in advances.items():
            self.expected[key] = adv.next_offset
            self.progress_at[key] = now
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

    async def _dead_letter(
        self, poison: list[Poison], *, applied: int = 0, kind: str = "handler"
    ) -> None:
        """Send ``poison`` to the DLQ (``kind``: why, a bounded metric label)."""
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
        POISON.labels(self.group_id, kind).inc(len(poison))

    def _update_lag(self) -> None:
        now = time.monotonic()
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            highwater = self.consumer.highwater(tp)
            position = self.expected.get(key)
            if highwater is not None:
                lag = max(0, highwater - (position or 0))
                LAG.labels(self.group_id, str(tp.partition)).set(lag)
                if lag == 0 and key in self.progress_at:
                    self.progress_at[key] = now  # caught up: waiting on nothing


def vars_of(failure: Failure) -> dict[str, Any]:
    """A failure as log fields."""
    return {"reason": failure.reason, "kind": failure.kind, "sqlstate": failure.sqlstate}


def stalled_loops(loops: Mapping[str, BatchConsumer]) -> str | None:
    """What a readiness check says of the named loops with stalled partitions
    (``stalled: consumer 0 partition 3 (lag 120) since … (130 s)``), or None: none is."""
    now, wall = time.monotonic(), datetime.now(UTC)
    found = [(name, loops[name].stalls(now)) for name in sorted(loops)]
    said = [f"{name} {describe(stalls, now=now, wall=wall)}" for name, stalls in found if stalls]
    return "stalled: " + "; ".join(said) if said else None


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
            dlq_topic=settings.topics.dlq,
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
