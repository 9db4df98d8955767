"""The outbox gate's questions to Postgres: one for the lanes that arrive together, at most
one every ``every_s`` while they wait (each lane asking on its own was ~900 a bench run)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from clm_stage_engine.relay import OutboxGate


class _Gate(OutboxGate):
    """A gate whose backlog is a script of answers (the last one repeats), counting them."""

    def __init__(self, answers: list[int], *, every_s: float) -> None:
        super().__init__(cast(Any, None), limit=10, every_s=every_s)
        self.answers = answers
        self.asked = 0

    async def backlog(self) -> int:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        await asyncio.sleep(0.001)  # a round trip: the other lanes arrive meanwhile
        return answer


async def test_lanes_at_an_open_gate_share_one_answer() -> None:
    gate = _Gate([3], every_s=10)
    await asyncio.wait_for(asyncio.gather(gate(), gate(), gate()), timeout=5)
    assert gate.asked == 1
    await asyncio.wait_for(gate(), timeout=5)  # within every_s: the same answer again
    assert gate.asked == 1


async def test_waiting_lanes_ask_once_per_interval_between_them() -> None:
    gate = _Gate([20, 20, 5], every_s=0.2)  # shut, shut, then open
    await asyncio.wait_for(asyncio.gather(gate(), gate(), gate()), timeout=5)
    assert gate.asked == 3  # each lane asking on its own: 7 questions at least


async def test_an_answer_older_than_the_interval_is_asked_again() -> None:
    gate = _Gate([3, 30, 4], every_s=0.05)
    await gate()
    await asyncio.sleep(0.06)
    await asyncio.wait_for(gate(), timeout=5)  # 30: shut for one interval, then 4
    assert gate.asked == 3
