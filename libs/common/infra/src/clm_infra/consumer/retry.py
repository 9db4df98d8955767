"""Applying one fetched batch until it is done: retried while the failure is transient,
bisected when it is one retrying cannot fix (:mod:`clm_infra.failures`).

* a :class:`Conflict` is retried at once (backoff only from the second in a row);
* a transient failure (Postgres down, a serialization failure, a deadlock, a lock, anything
  unknown) is retried after a backoff, for as long as it lasts: nothing is skipped;
* a permanent one bisects the batch, each half its own transaction with its own offset
  advance, until the records that fail alone are found; each goes to the dead-letter topic in
  a transaction that advances the offset past it. A batch of one record that fails is tried
  once more first, so that every dead-lettered record failed twice (here, or in a larger batch
  and alone), and a race that broke a constraint once passes;
* fenced (another owner moved a stored offset): every partition left is sought back to its
  stored offset, and the rest of the batch is dropped (it is fetched again).

Stopping mid-retry leaves the stored offsets where they were, so nothing is lost: the next
owner of these partitions seeks to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import TopicPartition

from clm_infra.consumer.bisection import Part, Plan, SetAside
from clm_infra.consumer.dlq import PoisonLimitExceeded
from clm_infra.consumer.handler import Conflict
from clm_infra.consumer.metrics import BATCH_SECONDS, BATCH_SIZE, BATCHES, BISECTED
from clm_infra.consumer.policy import BatchPolicy
from clm_infra.consumer.positions import Positions
from clm_infra.consumer.transactions import BatchWriter
from clm_infra.failures import Failure, classify
from clm_infra.offsets import OffsetFenced

log = logging.getLogger(__name__)

Seek = Callable[[set[TopicPartition]], Awaitable[None]]


def vars_of(failure: Failure) -> dict[str, Any]:
    """A failure as log fields."""
    return {"reason": failure.reason, "kind": failure.kind, "sqlstate": failure.sqlstate}


def partitions_of(records: list[Any]) -> set[TopicPartition]:
    return {TopicPartition(r.topic, r.partition) for r in records}


class RetryingApply:
    """Applies fetched batches through ``writer``; ``seek`` points partitions back at their
    stored offsets (after a fence)."""

    def __init__(
        self,
        *,
        group_id: str,
        policy: BatchPolicy,
        stopping: asyncio.Event,
        positions: Positions,
        writer: BatchWriter,
        seek: Seek,
    ) -> None:
        self._group_id = group_id
        self._backoff_s = policy.retry_backoff_s
        self._stopping = stopping
        self._positions = positions
        self._writer = writer
        self._seek = seek
        self.last_batch_at: float | None = None  # monotonic: the last batch applied

    async def apply(self, records: list[Any]) -> None:
        """Apply ``records`` (in order), however many attempts and parts that takes."""
        plan = Plan(records)
        conflicts = 0
        while plan and not self._stopping.is_set():
            part = plan.head()
            fresh = self._positions.fresh(part.records)
            if not fresh:
                plan.done()
                continue
            started = time.perf_counter()
            try:
                await self._write(part, fresh)
            except PoisonLimitExceeded:
                raise
            except OffsetFenced as exc:
                await self._fenced(plan, exc)
                return
            except Conflict as exc:
                conflicts += 1
                await self._conflicted(exc, len(fresh), conflicts)
                continue
            except Exception as exc:
                await self._failed(plan, part, fresh, exc)
                continue
            plan.done()
            conflicts = 0
            if not isinstance(part, SetAside):
                self._applied(len(fresh), started)

    async def _write(self, part: Part, fresh: list[Any]) -> None:
        if isinstance(part, SetAside):
            await self._writer.set_aside(fresh[0], part.failure)
        else:
            await self._writer.apply(fresh)

    def _applied(self, n: int, started: float) -> None:
        BATCH_SECONDS.labels(self._group_id).observe(time.perf_counter() - started)
        BATCH_SIZE.labels(self._group_id).observe(n)
        BATCHES.labels(self._group_id, "ok").inc()
        self.last_batch_at = time.monotonic()

    async def _fenced(self, plan: Plan, exc: OffsetFenced) -> None:
        BATCHES.labels(self._group_id, "fenced").inc()
        log.warning("batch fenced; reloading offsets", extra={"why": str(exc)})
        await self._seek(partitions_of(plan.records_left()))

    async def _conflicted(self, exc: Conflict, n: int, conflicts: int) -> None:
        BATCHES.labels(self._group_id, "conflict").inc()
        log.info(
            "batch conflicted; rolled back, retrying",
            extra={"n": n, "why": str(exc), "conflicts": conflicts},
        )
        if conflicts > 1:
            await asyncio.sleep(self._backoff_s)

    async def _failed(self, plan: Plan, part: Part, fresh: list[Any], exc: Exception) -> None:
        """Rolled back: retry after a backoff, or bisect (the failure is permanent)."""
        failure = classify(exc)
        if isinstance(part, SetAside) or not failure.permanent:
            BATCHES.labels(self._group_id, "failed").inc()
            log.exception(
                "batch failed; rolled back, retrying",
                extra={"n": len(fresh), "reason": failure.reason},
                exc_info=exc,
            )
            await asyncio.sleep(self._backoff_s)
            return
        first = plan.first_split()
        if first and len(fresh) == 1:
            BATCHES.labels(self._group_id, "failed").inc()
            log.warning("a record failed; retrying it once", extra=vars_of(failure))
            await asyncio.sleep(self._backoff_s)
            return
        BATCHES.labels(self._group_id, "bisected").inc()
        if first:
            BISECTED.labels(self._group_id).inc()
        self._split(plan, fresh, failure)

    def _split(self, plan: Plan, fresh: list[Any], failure: Failure) -> None:
        if len(fresh) == 1:
            log.warning(
                "a record fails alone; setting it aside",
                extra={
                    "partition": fresh[0].partition,
                    "offset": fresh[0].offset,
                    "reason": failure.reason,
                },
            )
            plan.set_aside(fresh[0], failure)
        else:
            log.warning(
                "batch failed with what retrying cannot fix; bisecting",
                extra={"n": len(fresh), "reason": failure.reason},
            )
            plan.bisect(fresh)
