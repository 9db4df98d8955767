"""Workers: a process's loops start together, stop together, and say when one gave up."""

from __future__ import annotations

import asyncio

from clm_infra.worker import Supervisor, Workers


class Loop:
    def __init__(self) -> None:
        self.stop_asked = asyncio.Event()

    def stop(self) -> None:
        self.stop_asked.set()


async def test_stop_tells_each_registered_loop_and_waits_for_it() -> None:
    workers = Workers()
    finished: list[str] = []

    async def attempt() -> None:
        loop = Loop()
        workers.register("consumer 0", loop)
        try:
            await loop.stop_asked.wait()
            finished.append("consumer 0")
        finally:
            workers.register("consumer 0", None)

    workers.supervisors = [Supervisor("consumer", attempt)]
    async with workers.started():
        await asyncio.sleep(0.01)
        assert set(workers.running) == {"consumer 0"}
    assert finished == ["consumer 0"]
    assert workers.running == {}
    assert workers.stopping.is_set()
    assert not workers.failed


async def test_background_tasks_are_cancelled_and_stuck_loops_after_the_grace() -> None:
    cancelled: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    workers = Workers(
        supervisors=[Supervisor("stuck", lambda: forever("stuck"))],
        background=[("refresher", lambda: forever("refresher"))],
        grace_s=0.05,
    )
    async with workers.started():
        await asyncio.sleep(0.01)
    assert sorted(cancelled) == ["refresher", "stuck"]


async def test_a_fatal_error_marks_the_workers_failed() -> None:
    class Poison(Exception):
        pass

    async def attempt() -> None:
        raise Poison("limit")

    workers = Workers(supervisors=[Supervisor("consumer", attempt, fatal=(Poison,))])
    async with workers.started():
        for _ in range(100):
            if workers.failed:
                break
            await asyncio.sleep(0.01)
        assert workers.failed
