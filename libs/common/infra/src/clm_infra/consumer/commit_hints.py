"""Kafka's committed offsets, sent as hints off the batch's path.

The truth is in Postgres (sought to on assignment); what Kafka holds only helps tools that
read consumer groups. So a batch never waits for the group coordinator: one commit is in
flight at most, at most one per ``hint_interval_s``, and offsets that arrive meanwhile go in
the next one (newer offsets replace older ones per partition).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from clm_infra.offsets import OffsetAdvance


def hints_for(advances: Iterable[OffsetAdvance]) -> dict[TopicPartition, OffsetAndMetadata]:
    """What Kafka is told of committed ``advances``."""
    return {
        TopicPartition(a.topic, a.partition): OffsetAndMetadata(a.next_offset, "") for a in advances
    }


class CommitHints:
    def __init__(
        self, consumer: AIOKafkaConsumer, interval_s: float, stopping: asyncio.Event
    ) -> None:
        self._consumer = consumer
        self._interval_s = interval_s
        self._stopping = stopping
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._task: asyncio.Task[None] | None = None

    def send(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Queue ``offsets``; start a sender if none runs."""
        self._pending.update(offsets)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="offset-hints")

    async def _drain(self) -> None:
        while self._pending:
            offsets, self._pending = self._pending, {}
            with contextlib.suppress(Exception):  # e.g. revoked meanwhile: a hint, no harm
                await self._consumer.commit(offsets)
            if self._pending or not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval_s)

    async def finish(self) -> None:
        """Wait (a while) for the commit in flight, as the loop ends."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=5)
