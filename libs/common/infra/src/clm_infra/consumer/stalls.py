"""Lag and stall detection: a partition with lag whose offset has not advanced for
``stall_s`` seconds is stalled (:mod:`clm_infra.stall`). The ``clm_consumer_stalled`` gauge
says so, kept current by a watcher task, since the loop itself may be stuck in a batch."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer

from clm_infra.consumer.metrics import LAG, STALLED
from clm_infra.consumer.positions import Positions
from clm_infra.stall import Progress, Stall, stalled


class StallWatch:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        group_id: str,
        positions: Positions,
        stall_s: float | None,
        stopping: asyncio.Event,
    ) -> None:
        self._consumer = consumer
        self._group_id = group_id
        self._positions = positions
        self._stall_s = stall_s
        self._stopping = stopping
        self._task: asyncio.Task[None] | None = None

    def update_lag(self) -> None:
        """The lag gauges from the broker's high watermarks; a partition caught up counts as
        progress (it waits on nothing)."""
        now = time.monotonic()
        for tp in self._consumer.assignment():
            key = (tp.topic, tp.partition)
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            lag = self._positions.lag(key, highwater)
            LAG.labels(self._group_id, str(tp.partition)).set(lag)
            if lag == 0 and key in self._positions.progress_at:
                self._positions.progress_at[key] = now

    def stalls(self, now: float | None = None) -> list[Stall]:
        """The assigned partitions stalled at ``now`` (monotonic; default: the clock), with
        the gauge set to match. Never stalled without ``stall_s``."""
        if self._stall_s is None:
            return []
        now = time.monotonic() if now is None else now
        progress = self._progress()
        found = stalled(progress, now=now, after_s=self._stall_s)
        stuck = {s.partition for s in found}
        for partition in progress:
            STALLED.labels(self._group_id, str(partition)).set(1 if partition in stuck else 0)
        return found

    def _progress(self) -> dict[int, Progress]:
        """Each assigned partition's lag and last progress (once sought to its offset)."""
        positions = self._positions
        progress: dict[int, Progress] = {}
        for tp in self._consumer.assignment():
            key = (tp.topic, tp.partition)
            if key not in positions.progress_at:
                continue  # not sought to its stored offset yet
            end = max(self._consumer.highwater(tp) or 0, positions.seen_end.get(key, 0))
            progress[tp.partition] = Progress(positions.lag(key, end), positions.progress_at[key])
        return progress

    def start(self) -> None:
        """Watch in the background (with ``stall_s`` only)."""
        if self._stall_s is not None:
            every_s = min(5.0, max(0.1, self._stall_s / 4))
            self._task = asyncio.create_task(self._watch(every_s), name="stalls")

    async def _watch(self, every_s: float) -> None:
        while not self._stopping.is_set():
            self.stalls()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every_s)

    async def close(self) -> None:
        """Stop watching; no partition of this loop counts as stalled any more."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for key in list(self._positions.progress_at):
            STALLED.labels(self._group_id, str(key[1])).set(0)
