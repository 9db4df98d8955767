"""One micro-batch of ``clm.lifecycle.v1`` (records of the v1 and v2 contracts,
:mod:`clm_domain.lifecycle_records`), counted inside the consumer's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_domain.lifecycle_records import LifecycleRecord, decode
from clm_infra.consumer import BatchResult, Poison
from clm_metrics.buckets import BucketKey, aggregate, increments, stage_deltas
from clm_metrics.cohorts import CohortRow, cohort_rows
from clm_metrics.distinct import NumberCache
from clm_metrics.members import DistinctKey, distinct_items, leaving
from clm_metrics.repository import activity_writes, bucket_writes
from clm_metrics.tickets import TicketEvent, advance, ticket_event

Parsed = tuple[
    list[tuple[BucketKey, Any]],
    list[tuple[DistinctKey, str]],
    list[CohortRow],
    LifecycleRecord,
    TicketEvent | None,
]


class LifecycleHandler:
    """Dedupe by record id; advance the tickets the batch names (their open level's changes
    join the increments); add bucket increments (minute + rollups), distinct-set members
    (and take out erased and merged profiles), cohort activity and stage count deltas (one
    statement per table per batch)."""

    def __init__(self, numbers: NumberCache | None = None) -> None:
        self._numbers = numbers if numbers is not None else NumberCache()

    async def __call__(self, conn: AsyncConnection, records: Sequence[Any]) -> BatchResult:
        poison: list[Poison] = []
        docs: dict[str, Parsed] = {}
        for record in records:
            try:
                doc = decode(record.value)
                record_id = str(doc["record_id"])
                parsed = (
                    increments(doc),
                    distinct_items(doc),
                    cohort_rows(doc),
                    doc,
                    ticket_event(doc),
                )
            except (
                orjson.JSONDecodeError,
                KeyError,
                TypeError,
                ValueError,
                ArithmeticError,
                AttributeError,
            ) as exc:
                poison.append(Poison(record, f"bad lifecycle record: {exc!r}"[:500]))
                continue
            docs.setdefault(record_id, parsed)
        fresh = await bucket_writes.claim_records(conn, list(docs))
        new = [docs[r] for r in docs if r in fresh]
        for segment in segments(new):
            await self._count(conn, segment)
        return BatchResult(poison=poison, applied=len(new))

    async def _count(self, conn: AsyncConnection, new: Sequence[Parsed]) -> None:
        """Count records (in arrival order, none after an anonymisation among them)."""
        gone = [g for _, _, _, doc, _ in new if (g := leaving(doc)) is not None]
        ticket_steps = [
            step
            for _, _, _, doc, ticket in new
            if (step := ticket if ticket is not None else leaving(doc)) is not None
        ]
        tickets = advance(
            await activity_writes.lock_tickets(
                conn,
                [t.key for _, _, _, _, t in new if t is not None],
                [who for g in gone for who in (g.who, g.into, g.pseudonym) if who is not None],
            ),
            ticket_steps,
        )
        await activity_writes.write_tickets(conn, tickets.states)
        await bucket_writes.add_counts(
            conn,
            aggregate([*(p for incs, *_ in new for p in incs), *tickets.increments]),
            [item for _, items, *_ in new for item in items],
            leaving=gone,
            numbers=self._numbers,
        )
        await activity_writes.rename_cohort_activity(conn, gone)
        await activity_writes.add_cohort_activity(
            conn, [row for _, _, rows, *_ in new for row in rows]
        )
        await bucket_writes.add_stage_counts(conn, stage_deltas(doc for *_, doc, _ in new))


def segments(parsed: Sequence[Parsed]) -> list[Sequence[Parsed]]:
    """The batch cut after each anonymisation: the ids counted before it are the profile's,
    those after it a new profile's (the id came back), so the rename must fall between."""
    out: list[Sequence[Parsed]] = []
    start = 0
    for n, (*_, doc, _) in enumerate(parsed):
        gone = leaving(doc)
        if gone is not None and gone.pseudonym is not None:
            out.append(parsed[start : n + 1])
            start = n + 1
    if start < len(parsed):
        out.append(parsed[start:])
    return out
