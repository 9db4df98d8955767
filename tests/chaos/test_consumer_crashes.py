"""The consumers crash (SIGKILL) at random points while events flow: nothing lost, nothing
doubled, stages as the truth says, offsets at the log end."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.chaos.harness import ChaosStack, Ledger, check, loaded

KILLS = 10


@pytest.mark.timeout(900)
async def test_stage_engine_and_metrics_sigkilled_at_random_points(
    shared_env: dict[str, str], stack: ChaosStack
) -> None:
    ledger = Ledger()

    async def crash(name: str, seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(KILLS):
            await asyncio.sleep(rnd.uniform(0.2, 2.5))
            for proc in stack.alive(name):
                proc.kill()
            await asyncio.to_thread(stack.start, name)

    async with loaded(stack, ledger) as load:
        await load.grows(by=50)
        await asyncio.gather(crash("stage-engine", 1), crash("metrics", 2))
        await load.finish()
        assert stack.started == 3 + 2 * KILLS
        await check(shared_env, ledger, metrics_url=stack.url("metrics"))
