"""Consumed offsets kept in Postgres, in the same transaction as the effects.

The stored ``next_offset`` of (group, topic, partition) is the truth; Kafka's committed offsets
are only a hint. Advancing is a compare-and-set against the offset this consumer last stored
or read on assignment, so a consumer whose partition was reassigned (a zombie) cannot commit:
its transaction sees the row moved and rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_infra.db import driver, rowcount
from clm_infra.schema import consumer_offsets


class OffsetFenced(Exception):
    """Another consumer advanced the stored offset: this batch must not commit."""


@dataclass(frozen=True, slots=True)
class OffsetAdvance:
    topic: str
    partition: int
    expected: int | None  # None: no row stored yet
    next_offset: int


async def load_offsets(
    conn: AsyncConnection, group_id: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    if not partitions:
        return {}
    rows = await conn.execute(
        select(
            consumer_offsets.c.topic, consumer_offsets.c.partition, consumer_offsets.c.next_offset
        ).where(
            consumer_offsets.c.group_id == group_id,
            tuple_(consumer_offsets.c.topic, consumer_offsets.c.partition).in_(partitions),
        )
    )
    return {(r.topic, r.partition): r.next_offset for r in rows}


# Every partition's compare-and-set in one statement: the rows are locked in a stable order
# first (replicas never wait on each other in a cycle), then each moves only from the offset
# this consumer expects. The rows it moved come back: fewer than asked means fenced.
_ADVANCE = """
WITH wanted AS (
    SELECT * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
        AS w(topic, partition, expected, next_offset)
), locked AS (
    SELECT o.topic, o.partition FROM consumer_offsets o JOIN wanted w USING (topic, partition)
    WHERE o.group_id = $1::text ORDER BY o.topic, o.partition FOR UPDATE OF o
)
UPDATE consumer_offsets o SET next_offset = w.next_offset
FROM wanted w, locked l
WHERE o.group_id = $1 AND o.topic = w.topic AND o.partition = w.partition
    AND l.topic = w.topic AND l.partition = w.partition AND o.next_offset = w.expected
RETURNING o.topic, o.partition
"""
_FIRST = (
    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset)"
    " SELECT $1::text, * FROM unnest($2::text[], $3::int[], $4::bigint[]) ORDER BY 2, 3"
    " ON CONFLICT DO NOTHING"
)


async def advance_offsets(
    conn: AsyncConnection, group_id: str, advances: list[OffsetAdvance]
) -> None:
    """Compare-and-set every partition's offset; raise :class:`OffsetFenced` if one moved.

    Two statements at most, whatever the number of partitions (one per partition was up to
    six round trips for a small batch): the moves of stored rows, and the first rows of
    partitions never stored (``expected`` None), which only the first writer inserts."""
    moves = sorted((a for a in advances if a.expected is not None), key=_order)
    firsts = sorted((a for a in advances if a.expected is None), key=_order)
    if moves:
        # through SQLAlchemy: the batch's first statement begins its transaction
        moved = (
            await conn.exec_driver_sql(
                _ADVANCE,
                (
                    group_id,
                    [a.topic for a in moves],
                    [a.partition for a in moves],
                    [a.expected for a in moves],
                    [a.next_offset for a in moves],
                ),
            )
        ).all()
        if len(moved) != len(moves):
            done = {tuple(r) for r in moved}
            adv = next(a for a in moves if (a.topic, a.partition) not in done)
            raise OffsetFenced(f"{adv.topic}[{adv.partition}] moved past {adv.expected}")
    if firsts:
        status = await (await driver(conn)).execute(
            _FIRST,
            group_id,
            [a.topic for a in firsts],
            [a.partition for a in firsts],
            [a.next_offset for a in firsts],
        )
        if rowcount(status) != len(firsts):
            raise OffsetFenced(f"{len(firsts)} partitions stored by another consumer first")


def _order(adv: OffsetAdvance) -> tuple[str, int]:
    return adv.topic, adv.partition
