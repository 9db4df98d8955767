"""Publishing to Kafka from request handlers through ONE pump task, in whole batches.

Request handlers never call ``producer.send()`` themselves (many concurrent sends make aiokafka
spin): a request enqueues its records as one *ticket* (a future and a count) and waits for it,
bounded by a timeout. The pump takes every ticket waiting, groups their records by
topic-partition (the same murmur2 partitioner as ``send()``, so a customer's events keep their
partition and order), fills aiokafka ``BatchBuilder``s and hands each, closed, to
``send_batch()``: a few Python calls per batch instead of a ``send()`` per record, and no
linger (a closed batch is ready at once; batching comes from the records that arrive while the
previous produce request is in flight). When the broker acknowledged a batch (acks=all,
idempotent producer) its records count down their tickets; a ticket resolves when all its
records are acknowledged, or fails with the first error. The producer is (re)built lazily:
when the broker is away, or after a failed delivery (aiokafka's idempotent producer can stick
on ``OutOfOrderSequenceNumber`` after a broker blip), the pump drops it, fails what it holds
and builds a new one. A caller that times out gets :class:`PublishUnavailable`; its records
may still reach the broker later, which is why events carry an idempotency key. Why this
shape: ``docs/performance.md``, "The ingest".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

PUBLISH_SECONDS = Histogram(
    "clm_ingest_publish_duration_seconds",
    "From enqueue to the broker's ack of a request's records",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_FAILURES = Counter(
    "clm_ingest_publish_failures_total", "Publishes that ended without an ack", ["reason"]
)
PRODUCER_REBUILDS = Counter("clm_ingest_producer_rebuilds_total", "Producers rebuilt")
PARTITIONER = DefaultPartitioner()
_KEY_CACHE_MAX = 100_000


class PublishUnavailable(Exception):
    """The broker did not acknowledge in time (or cannot be reached): answer 503."""


class Record(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class _Ticket:
    """One request's records: resolved when the broker acknowledged all of them."""

    __slots__ = ("done", "records", "remaining")

    def __init__(self, records: list[Record], done: asyncio.Future[None]) -> None:
        self.records = records
        self.done = done
        self.remaining = len(records)

    def acked(self, count: int) -> None:
        self.remaining -= count
        if self.remaining <= 0 and not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class Publisher:
    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        *,
        timeout_s: float,
        queue_size: int,
    ) -> None:
        self._make_producer = make_producer
        self._timeout_s = timeout_s
        self._capacity = queue_size  # records waiting for the pump, at most
        self._waiting: list[_Ticket] = []
        self._waiting_records = 0
        self._wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._rebuild = False
        self._partitions: dict[str, list[int]] = {}
        self._key_partition: dict[tuple[str, bytes], int] = {}

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="kafka-publisher")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            # let waiting records go out for a moment, then stop
            deadline = time.monotonic() + self._timeout_s
            while self._waiting and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_waiting(KafkaError("shutting down"))
        await self._drop_producer()

    async def publish(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Return once the broker acknowledged the record; raise PublishUnavailable otherwise."""
        await self.publish_many([Record(topic, key, value, headers)])

    async def publish_many(self, records: list[Record]) -> None:
        """Return once the broker acknowledged every record; else raise PublishUnavailable.

        The records are queued at once (or none, when there is no room for them all) and
        awaited together under one timeout.
        """
        if self._closing:
            raise PublishUnavailable("shutting down")
        if not records:
            return
        if self._waiting_records + len(records) > self._capacity:
            PUBLISH_FAILURES.labels("queue_full").inc()
            raise PublishUnavailable("publish queue full")
        enqueued = time.perf_counter()
        ticket = _Ticket(records, asyncio.get_running_loop().create_future())
        self._waiting.append(ticket)
        self._waiting_records += len(records)
        self._wakeup.set()
        try:
            # asyncio.timeout, not wait_for: no task per request on the hot path
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(ticket.done)
        except TimeoutError:
            PUBLISH_FAILURES.labels("timeout").inc()
            ticket.done.add_done_callback(_retrieve)
            raise PublishUnavailable("broker did not acknowledge in time") from None
        except KafkaError as exc:
            PUBLISH_FAILURES.labels(type(exc).__name__).inc()
            raise PublishUnavailable(f"broker error: {exc!r}") from exc
        PUBLISH_SECONDS.observe(time.perf_counter() - enqueued)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            try:
                await asyncio.wait_for(producer.start(), timeout=self._timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
            self._partitions.clear()
            self._key_partition.clear()
            PRODUCER_REBUILDS.inc()
            log.info("kafka producer started")
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=5)

    def _fail_waiting(self, exc: BaseException) -> None:
        tickets, self._waiting, self._waiting_records = self._waiting, [], 0
        for ticket in tickets:
            ticket.fail(exc)

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes) -> int:
        cached = self._key_partition.get((topic, key))
        if cached is not None:
            return cached
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = sorted(await producer.partitions_for(topic))
            self._partitions[topic] = partitions
        partition: int = PARTITIONER(key, partitions, partitions)
        if len(self._key_partition) >= _KEY_CACHE_MAX:
            self._key_partition.clear()
        self._key_partition[(topic, key)] = partition
        return partition

    async def _pump(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            tickets, self._waiting, self._waiting_records = self._waiting, [], 0
            tickets = [t for t in tickets if not t.done.done()]
            if not tickets:
                continue
            if self._rebuild:
                self._rebuild = False
                await self._drop_producer()
            try:
                producer = await self._ensure_producer()
                # one deadline for handing the whole lot to the producer
                async with asyncio.timeout(self._timeout_s):
                    await self._send(producer, tickets)
            except asyncio.CancelledError:
                for ticket in tickets:
                    ticket.fail(KafkaError("shutting down"))
                raise
            except Exception as exc:
                log.warning("kafka producer failed; rebuilding it", extra={"error": repr(exc)})
                error = exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))
                for ticket in tickets:
                    ticket.fail(error)
                await self._drop_producer()
                await asyncio.sleep(0.2)

    async def _send(self, producer: AIOKafkaProducer, tickets: list[_Ticket]) -> None:
        groups: defaultdict[tuple[str, int], list[tuple[Record, _Ticket]]] = defaultdict(list)
        known = self._key_partition
        for ticket in tickets:
            for rec in ticket.records:
                partition = known.get((rec.topic, rec.key))
                if partition is None:
                    partition = await self._partition(producer, rec.topic, rec.key)
                groups[(rec.topic, partition)].append((rec, ticket))
        for (topic, partition), items in groups.items():
            builder = producer.create_batch()
            chunk: list[_Ticket] = []
            for rec, ticket in items:
                appended = builder.append(
                    key=rec.key, value=rec.value, timestamp=None, headers=rec.headers
                )
                if appended is None:  # the batch is full: send it, start the next
                    await self._submit(producer, builder, topic, partition, chunk)
                    builder, chunk = producer.create_batch(), []
                    appended = builder.append(
                        key=rec.key, value=rec.value, timestamp=None, headers=rec.headers
                    )
                    if appended is None:
                        ticket.fail(KafkaError("record larger than the producer's batch size"))
                        continue
                chunk.append(ticket)
            if chunk:
                await self._submit(producer, builder, topic, partition, chunk)

    async def _submit(
        self,
        producer: AIOKafkaProducer,
        builder: Any,
        topic: str,
        partition: int,
        chunk: list[_Ticket],
    ) -> None:
        # closed: nothing more goes into it, so the accumulator hands it to the sender at once
        # instead of letting it linger (linger_ms is for send(), which appends to open batches)
        builder.close()
        sent = await producer.send_batch(builder, topic, partition=partition)
        sent.add_done_callback(self._resolver(chunk))

    def _resolver(self, chunk: list[_Ticket]) -> Callable[[asyncio.Future[Any]], None]:
        def resolve(sent: asyncio.Future[Any]) -> None:
            if sent.cancelled():
                exc: BaseException | None = KafkaError("send cancelled")
            else:
                exc = sent.exception()
            if exc is not None:
                # a failed delivery can leave the idempotent producer stuck: rebuild it
                self._rebuild = True
                for ticket in chunk:
                    ticket.fail(exc)
                return
            counts: dict[int, tuple[_Ticket, int]] = {}
            for ticket in chunk:
                prev = counts.get(id(ticket))
                counts[id(ticket)] = (ticket, 1 if prev is None else prev[1] + 1)
            for ticket, count in counts.values():
                ticket.acked(count)

        return resolve


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Retrieve a late failure of an abandoned wait, so asyncio does not log it as unhandled."""
    if not fut.cancelled():
        fut.exception()
