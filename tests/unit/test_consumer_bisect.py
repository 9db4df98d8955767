"""A batch that fails with what retrying cannot fix is bisected: the records that fail alone
go to the DLQ with their reason, the rest is applied once and in order, offsets move on.
Transient failures are retried, never dead-lettered.

The consumer loop runs for real over fakes of its edges: a connection whose transactions
commit or discard what the handler staged, stored offsets with their compare-and-set, and a
DLQ producer that records what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest
from aiokafka import TopicPartition

from clm_infra import consumer as consumer_module
from clm_infra.consumer import BISECTED, BatchConsumer, BatchPolicy, BatchResult, stored_offsets
from clm_infra.offsets import OffsetAdvance, OffsetFenced

GROUP = "bisect-test"


class Store:
    """What is committed: applied records in order and the stored next offsets."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, int]] = []
        self.offsets: dict[tuple[str, int], int | None] = {}


class Conn:
    """A connection whose transaction commits what was staged in it, or nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.staged: list[tuple[int, int]] = []
        self.staged_offsets: dict[tuple[str, int], int] = {}

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        self.staged, self.staged_offsets = [], {}
        yield  # an exception propagates: nothing staged is kept
        self.store.applied.extend(self.staged)
        self.store.offsets.update(self.staged_offsets)

    async def exec_driver_sql(self, _: str) -> None:
        return None

    async def commit(self) -> None:
        return None

    async def invalidate(self) -> None:
        return None

    async def close(self) -> None:
        return None


class Connecting:
    """What ``engine.connect()`` gives: awaited, or entered as a context manager."""

    def __init__(self, store: Store) -> None:
        self.conn = Conn(store)

    def __await__(self) -> Any:
        async def conn() -> Conn:
            return self.conn

        return conn().__await__()

    async def __aenter__(self) -> Conn:
        return self.conn

    async def __aexit__(self, *_: object) -> None:
        return None


class Engine:
    def __init__(self, store: Store) -> None:
        self.store = store

    def connect(self) -> Connecting:
        return Connecting(self.store)


async def fake_load(conn: Any, group: str, keys: list[tuple[str, int]]) -> dict[Any, Any]:
    return {k: conn.store.offsets[k] for k in keys if conn.store.offsets.get(k) is not None}


async def fake_advance(conn: Any, group: str, advances: list[OffsetAdvance]) -> None:
    assert group == GROUP
    for a in advances:
        key = (a.topic, a.partition)
        if conn.store.offsets.get(key) != a.expected:
            raise OffsetFenced(f"{key}: stored {conn.store.offsets.get(key)}, not {a.expected}")
        conn.staged_offsets[key] = a.next_offset


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, str]] = []

    async def send(self, topic: str, *, value: Any, key: Any, headers: Any) -> Any:
        h = {k: v.decode() for k, v in headers}
        self.sent.append((int(h["original_partition"]), int(h["original_offset"]), h["reason"]))

        async def acked() -> None:
            return None

        return acked()


class KafkaConsumer:
    def __init__(self, ends: dict[int, int]) -> None:
        self.ends = ends
        self.sought: list[tuple[int, int]] = []

    def assignment(self) -> set[Any]:
        return {TopicPartition("events", p) for p in self.ends}

    def highwater(self, tp: Any) -> int:
        return self.ends[tp.partition]

    def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp.partition, offset))

    async def commit(self, _: Any) -> None:
        return None


def records(per_partition: dict[int, int]) -> list[Any]:
    """Records as a fetch returns them: each partition's in offset order, one after another."""
    return [
        SimpleNamespace(topic="events", partition=p, offset=o, key=b"k", value=f"{p}:{o}".encode())
        for p, n in per_partition.items()
        for o in range(n)
    ]


class Handler:
    """Applies records by staging them on the connection; raises ``error()`` for any batch
    holding a bad record, and a transient error for the first ``flaky`` calls."""

    def __init__(
        self,
        bad: set[tuple[int, int]],
        error: Callable[[], Exception],
        *,
        flaky: int = 0,
        transient: Callable[[], Exception] = lambda: ConnectionResetError("reset"),
    ) -> None:
        self.bad = bad
        self.error = error
        self.flaky = flaky
        self.transient = transient
        self.calls: list[list[tuple[int, int]]] = []
        self.on_call: Callable[[int], None] = lambda n: None

    async def __call__(self, conn: Any, batch: Sequence[Any]) -> BatchResult:
        keys = [(r.partition, r.offset) for r in batch]
        self.calls.append(keys)
        self.on_call(len(self.calls))
        conn.staged.extend(keys)  # written before the failing statement: must roll back
        if len(self.calls) <= self.flaky:
            raise self.transient()
        if any(k in self.bad for k in keys):
            raise self.error()
        return BatchResult(applied=len(batch))


def make_loop(
    handler: Handler, ends: dict[int, int], *, limit: int = 1000
) -> tuple[BatchConsumer, Store, Producer, KafkaConsumer]:
    store = Store()
    producer = Producer()
    kafka = KafkaConsumer(ends)
    loop = BatchConsumer(
        consumer=cast(Any, kafka),
        engine=cast(Any, Engine(store)),
        topic="events",
        group_id=GROUP,
        handler=handler,
        dlq_producer=cast(Any, producer),
        dlq_topic="dlq",
        policy=BatchPolicy(retry_backoff_s=0.001, max_consecutive_poison=limit, stall_s=60),
    )
    for p in ends:
        loop.expected[("events", p)] = None
        store.offsets[("events", p)] = None
        loop.progress_at[("events", p)] = 0.0
    return loop, store, producer, kafka


@pytest.fixture(autouse=True)
def _offsets_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stored_offsets, "advance_offsets", fake_advance)
    monkeypatch.setattr(stored_offsets, "load_offsets", fake_load)


def overflow() -> Exception:
    error: Exception = asyncpg.exceptions.NumericValueOutOfRangeError("numeric field overflow")
    return error


def bisected() -> float:
    return float(BISECTED.labels(GROUP)._value.get())


@pytest.mark.parametrize(
    "bad",
    [
        {(0, 3)},
        {(0, 0), (1, 9)},  # the first and the last record
        {(1, 7), (1, 8)},  # two in a row
        {(0, o) for o in range(0, 12, 3)} | {(1, 2)},
    ],
    ids=["one", "ends", "adjacent", "many"],
)
async def test_records_failing_alone_are_dead_lettered_and_the_rest_applied_once_in_order(
    bad: set[tuple[int, int]],
) -> None:
    ends = {0: 12, 1: 10}
    handler = Handler(bad, overflow)
    loop, store, producer, _ = make_loop(handler, ends)
    before = bisected()
    await loop._apply_with_retry(records(ends))

    good = [(p, o) for p, n in ends.items() for o in range(n) if (p, o) not in bad]
    assert sorted(store.applied) == good  # each good record once
    for p in ends:  # and each partition's in offset order
        mine = [o for q, o in store.applied if q == p]
        assert mine == sorted(mine)
    assert sorted((p, o) for p, o, _ in producer.sent) == sorted(bad)
    assert all(
        reason == "NumericValueOutOfRangeError 22003: numeric field overflow"
        for *_, reason in producer.sent
    )
    assert store.offsets == {("events", p): n for p, n in ends.items()}
    assert loop.expected == store.offsets
    assert bisected() == before + 1  # one batch bisected, however often it was split
    assert loop.stalls(now=1.0) == []


async def test_a_batch_that_fails_once_transiently_is_retried_whole_without_dead_letters() -> None:
    ends = {0: 5, 1: 5}
    handler = Handler(set(), overflow, flaky=2)
    loop, store, producer, _ = make_loop(handler, ends)
    await loop._apply_with_retry(records(ends))
    assert producer.sent == []
    assert sorted(store.applied) == [(p, o) for p in ends for o in range(5)]
    assert len(handler.calls) == 3
    assert all(len(call) == 10 for call in handler.calls)  # never split


@pytest.mark.parametrize(
    "error",
    [
        lambda: asyncpg.exceptions.SerializationError("could not serialize access"),
        lambda: asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        lambda: asyncpg.exceptions.LockNotAvailableError("could not obtain lock"),
        lambda: TimeoutError(),
    ],
    ids=["40001", "40P01", "55P03", "timeout"],
)
async def test_a_transient_failure_is_retried_for_as_long_as_it_lasts(
    error: Callable[[], Exception],
) -> None:
    ends = {0: 4}
    handler = Handler(set(), overflow, flaky=10**9, transient=error)
    loop, store, producer, _ = make_loop(handler, ends)
    handler.on_call = lambda calls: loop.stop() if calls >= 20 else None
    await asyncio.wait_for(loop._apply_with_retry(records(ends)), timeout=5)
    assert len(handler.calls) == 20
    assert producer.sent == []
    assert store.applied == []
    assert store.offsets == {("events", 0): None}
    assert all(len(call) == 4 for call in handler.calls)


async def test_python_errors_the_records_cause_are_bisected_too() -> None:
    ends = {0: 8}
    handler = Handler({(0, 5)}, lambda: OverflowError("date value out of range"))
    loop, store, producer, _ = make_loop(handler, ends)
    await loop._apply_with_retry(records(ends))
    assert producer.sent == [(0, 5, "OverflowError: date value out of range")]
    assert store.applied == [(0, o) for o in range(8) if o != 5]


async def test_records_set_aside_count_towards_the_poison_limit() -> None:
    ends = {0: 10}
    handler = Handler({(0, o) for o in range(10)}, overflow)
    loop, store, producer, _ = make_loop(handler, ends, limit=3)
    with pytest.raises(consumer_module.PoisonLimitExceeded):
        await loop._apply_with_retry(records(ends))
    assert len(producer.sent) == 3
    assert store.offsets == {("events", 0): 3}  # the fourth was not set aside


async def test_fenced_mid_bisection_seeks_every_partition_left_back() -> None:
    ends = {0: 4, 1: 4}
    handler = Handler({(0, 1)}, overflow)
    loop, store, _, kafka = make_loop(handler, ends)

    def moved_on(calls: int) -> None:  # another owner moves partition 1 on meanwhile
        if calls == 1:
            store.offsets[("events", 1)] = 2

    handler.on_call = moved_on
    await loop._apply_with_retry(records(ends))
    assert store.applied == [(0, 0), (0, 2), (0, 3)]  # partition 0 bisected and applied
    assert kafka.sought == [(1, 2)]  # partition 1 sought back, not skipped past
    assert loop.expected[("events", 1)] == 2


def test_a_partition_behind_and_not_advancing_is_stalled() -> None:
    handler = Handler(set(), overflow)
    loop, _, _, _ = make_loop(handler, {0: 5, 1: 0})
    loop.progress_at[("events", 0)] = 100.0
    loop.progress_at[("events", 1)] = 0.0  # idle for long, but nothing waits on it
    assert loop.stalls(now=159.0) == []
    (stall,) = loop.stalls(now=160.0)
    assert (stall.partition, stall.lag, stall.since) == (0, 5, 100.0)
    sample = consumer_module.STALLED.labels(GROUP, "0")._value.get()
    assert sample == 1
    loop.expected[("events", 0)] = 5  # caught up
    assert loop.stalls(now=500.0) == []
    assert consumer_module.STALLED.labels(GROUP, "0")._value.get() == 0


async def test_a_batch_of_one_failing_record_is_tried_twice_before_the_dlq() -> None:
    ends = {0: 1}
    handler = Handler({(0, 0)}, overflow)
    loop, store, producer, _ = make_loop(handler, ends)
    await loop._apply_with_retry(records(ends))
    assert handler.calls == [[(0, 0)], [(0, 0)]]
    assert [(p, o) for p, o, _ in producer.sent] == [(0, 0)]
    assert store.offsets == {("events", 0): 1}


async def test_a_record_that_broke_a_constraint_once_is_applied_on_its_second_try() -> None:
    ends = {0: 1}
    handler = Handler(
        set(),
        overflow,
        flaky=1,
        transient=lambda: asyncpg.exceptions.UniqueViolationError("duplicate key value"),
    )
    loop, store, producer, _ = make_loop(handler, ends)
    await loop._apply_with_retry(records(ends))
    assert producer.sent == []
    assert store.applied == [(0, 0)]
