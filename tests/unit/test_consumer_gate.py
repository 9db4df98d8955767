"""The consumer loop waits at its gate before each fetch (what its batches feed catches up)."""

from __future__ import annotations

import asyncio
from typing import Any

from clm_infra.consumer import BatchPolicy
from tests.consumer_loops import bare_loop


class _Consumer:
    """Answers every fetch with nothing, counting the fetches."""

    def __init__(self) -> None:
        self.fetches = 0

    async def getmany(self, **_: Any) -> dict[Any, Any]:
        self.fetches += 1
        await asyncio.sleep(0.001)
        return {}

    def assignment(self) -> set[Any]:
        return set()


async def test_no_fetch_while_the_gate_is_shut() -> None:
    opened = asyncio.Event()
    waits = 0

    async def gate() -> None:
        nonlocal waits
        waits += 1
        await opened.wait()

    consumer = _Consumer()
    policy = BatchPolicy(max_wait_s=0.001, idle_recheck_s=3600, gate=gate)
    loop = bare_loop(policy, consumer=consumer)
    task = asyncio.create_task(loop._run())
    await asyncio.sleep(0.05)
    assert (waits, consumer.fetches) == (1, 0)  # held at the gate, nothing fetched
    opened.set()
    await asyncio.sleep(0.05)
    assert consumer.fetches > 1
    assert waits in (consumer.fetches, consumer.fetches + 1)  # the gate before every fetch
    loop.stop()
    await asyncio.wait_for(task, timeout=5)
