"""Cutting the stream into batches: up to ``max_records``, or what ``max_wait_s`` brings,
then (with ``fill_s``) more for a batch that has records, and the gate before each fetch."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from clm_infra.consumer.policy import BatchPolicy


class Batcher:
    def __init__(
        self, consumer: AIOKafkaConsumer, policy: BatchPolicy, stopping: asyncio.Event
    ) -> None:
        self._consumer = consumer
        self._policy = policy
        self._stopping = stopping

    async def next(self) -> list[Any]:
        """The next batch, in fetch order (each partition's records in offset order); empty
        when ``max_wait_s`` brought nothing. Waits at the policy's gate first: backpressure
        from what the batches feed."""
        if self._policy.gate is not None:
            await self._policy.gate()
        records = await self._fetch(round(self._policy.max_wait_s * 1000), self._policy.max_records)
        if records and self._policy.fill_s:
            records += await self._fill(len(records))
        return records

    async def _fetch(self, timeout_ms: int, max_records: int) -> list[Any]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [r for tp_records in batches.values() for r in tp_records]

    async def _fill(self, have: int) -> list[Any]:
        """More records for a batch that has ``have``, for up to ``fill_s``."""
        deadline = time.monotonic() + self._policy.fill_s
        more: list[Any] = []
        while have + len(more) < self._policy.max_records and not self._stopping.is_set():
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            more += await self._fetch(left_ms, self._policy.max_records - have - len(more))
        return more
