"""One micro-batch of ``clm.lifecycle.v1``, counted inside the consumer's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.consumer import BatchResult, Poison
from clm_metrics import repository
from clm_metrics.buckets import aggregate, increments, stage_deltas


class LifecycleHandler:
    """Dedupe by record id, add bucket increments and stage count deltas (one upsert each)."""

    async def __call__(self, conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        poison: list[Poison] = []
        docs: dict[str, tuple[Any, dict[str, Any]]] = {}
        for record in records:
            try:
                doc = orjson.loads(record.value)
                record_id = str(doc["record_id"])
                incs = increments(doc)
            except (
                orjson.JSONDecodeError,
                KeyError,
                TypeError,
                ValueError,
                ArithmeticError,
            ) as exc:
                poison.append(Poison(record, f"bad lifecycle record: {exc!r}"[:500]))
                continue
            docs.setdefault(record_id, (incs, doc))
        fresh = await repository.claim_records(conn, list(docs))
        new = [docs[r] for r in docs if r in fresh]
        await repository.add_to_buckets(conn, aggregate(p for incs, _ in new for p in incs))
        await repository.add_stage_counts(conn, stage_deltas(doc for _, doc in new))
        return BatchResult(poison=poison, applied=len(new))
