"""The consumer's poison limit counts runs of poison, not every poison record ever seen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clm_infra.consumer import BatchConsumer, BatchPolicy, Poison, PoisonLimitExceeded
from tests.consumer_loops import bare_loop


class _Producer:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, *_: Any, **__: Any) -> Any:
        self.sent += 1

        async def acked() -> None:
            return None

        return acked()


def _loop(limit: int) -> tuple[BatchConsumer, _Producer]:
    producer = _Producer()
    return bare_loop(BatchPolicy(max_consecutive_poison=limit), dlq_producer=producer), producer


def _poison(n: int) -> list[Poison]:
    record = SimpleNamespace(topic="events", partition=0, offset=1, key=b"k", value=b"x")
    return [Poison(record, "undecodable") for _ in range(n)]


async def test_poison_mixed_with_applied_records_never_trips_the_limit() -> None:
    loop, producer = _loop(limit=10)
    for _ in range(50):  # every batch: some good records and one poison
        await loop._dead_letter(_poison(1), applied=99)
    assert producer.sent == 50
    assert loop.consecutive_poison == 1


async def test_a_run_of_poison_past_the_limit_stops() -> None:
    loop, _ = _loop(limit=10)
    await loop._dead_letter(_poison(6), applied=0)
    with pytest.raises(PoisonLimitExceeded, match="11 poison records in a row"):
        await loop._dead_letter(_poison(5), applied=0)
