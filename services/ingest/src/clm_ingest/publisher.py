"""Publishing to Kafka from request handlers through ONE pump task.

Request handlers never call ``producer.send()`` themselves (many concurrent sends make aiokafka
spin, its issue #528): they enqueue a record with a future and wait for it, bounded by a
timeout. The pump hands records to the producer in order and resolves each future when the
broker acknowledged it (acks=all, idempotent). The producer is (re)built lazily: when the
broker is away, or after a fatal producer error (aiokafka's idempotent producer can stick on
``OutOfOrderSequenceNumber`` after a broker blip, its issue #1017), the pump drops it, fails
what it holds and builds a new one. A caller that times out gets :class:`PublishUnavailable`;
its record may still reach the broker later, which is why events carry an idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

PUBLISH_SECONDS = Histogram(
    "clm_ingest_publish_duration_seconds",
    "From enqueue to the broker's ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_FAILURES = Counter(
    "clm_ingest_publish_failures_total", "Publishes that ended without an ack", ["reason"]
)
PRODUCER_REBUILDS = Counter("clm_ingest_producer_rebuilds_total", "Producers rebuilt")


class PublishUnavailable(Exception):
    """The broker did not acknowledge in time (or cannot be reached): answer 503."""


class Record(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(slots=True)
class _Pending:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    done: asyncio.Future[None]
    enqueued: float


class Publisher:
    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        *,
        timeout_s: float,
        queue_size: int,
        max_batch: int = 1000,
    ) -> None:
        self._make_producer = make_producer
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._max_batch = max_batch
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._rebuild = False

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="kafka-publisher")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            # let queued records go out for a moment, then stop
            deadline = time.monotonic() + self._timeout_s
            while not self._queue.empty() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_queued("shutting down")
        await self._drop_producer()

    async def publish(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Return once the broker acknowledged the record; raise PublishUnavailable otherwise."""
        await self.publish_many([Record(topic, key, value, headers)])

    async def publish_many(self, records: list[Record]) -> None:
        """Return once the broker acknowledged every record; else raise PublishUnavailable.

        All records are queued at once (or none, when the queue has no room for them all) and
        awaited together under one timeout.
        """
        if self._closing:
            raise PublishUnavailable("shutting down")
        if self._queue.maxsize - self._queue.qsize() < len(records):
            PUBLISH_FAILURES.labels("queue_full").inc()
            raise PublishUnavailable("publish queue full")
        loop = asyncio.get_running_loop()
        enqueued = time.perf_counter()
        items = [_Pending(*r, loop.create_future(), enqueued) for r in records]
        for item in items:
            self._queue.put_nowait(item)
        # return_exceptions: every record's failure is retrieved, none logged as unhandled
        waiting = asyncio.gather(*(item.done for item in items), return_exceptions=True)
        try:
            results = await asyncio.wait_for(asyncio.shield(waiting), timeout=self._timeout_s)
        except TimeoutError:
            PUBLISH_FAILURES.labels("timeout").inc()
            raise PublishUnavailable("broker did not acknowledge in time") from None
        for result in results:
            if isinstance(result, BaseException):
                PUBLISH_FAILURES.labels(type(result).__name__).inc()
                raise PublishUnavailable(f"broker error: {result!r}") from result
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
            PRODUCER_REBUILDS.inc()
            log.info("kafka producer started")
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout=5)

    def _fail_queued(self, why: str) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.done.done():
                item.done.set_exception(KafkaError(why))

    async def _pump(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [i for i in batch if not i.done.done()]
            if self._rebuild:
                self._rebuild = False
                await self._drop_producer()
            try:
                producer = await self._ensure_producer()
                # one deadline for the whole batch (a wait_for per record costs a task each)
                async with asyncio.timeout(self._timeout_s):
                    for item in batch:
                        sent = await producer.send(
                            item.topic, value=item.value, key=item.key, headers=item.headers
                        )
                        sent.add_done_callback(self._resolver(item.done))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("kafka producer failed; rebuilding it", extra={"error": repr(exc)})
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(
                            exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))
                        )
                await self._drop_producer()
                await asyncio.sleep(0.2)

    def _resolver(self, target: asyncio.Future[None]) -> Callable[[asyncio.Future[object]], None]:
        def resolve(sent: asyncio.Future[object]) -> None:
            if sent.cancelled():
                exc: BaseException | None = KafkaError("send cancelled")
            else:
                exc = sent.exception()
            if exc is not None:
                # a failed delivery can leave the idempotent producer stuck: rebuild it
                self._rebuild = True
            if target.done():
                return
            if exc is not None:
                target.set_exception(exc)
            else:
                target.set_result(None)

        return resolve
