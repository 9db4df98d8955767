"""Consumed offsets kept in Postgres, in the same transaction as the effects.

The stored ``next_offset`` of (group, topic, partition) is the truth; Kafka's committed offsets
are only a hint. Advancing is a compare-and-set against the offset this consumer last stored
or read on assignment, so a consumer whose partition was reassigned (a zombie) cannot commit:
its transaction sees the row moved and rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.schema import consumer_offsets


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


async def advance_offsets(
    conn: AsyncConnection, group_id: str, advances: list[OffsetAdvance]
) -> None:
    """Compare-and-set every partition's offset; raise :class:`OffsetFenced` if one moved."""
    for adv in sorted(advances, key=lambda a: (a.topic, a.partition)):
        if adv.expected is None:
            result = await conn.execute(
                insert(consumer_offsets)
                .values(
                    group_id=group_id,
                    topic=adv.topic,
                    partition=adv.partition,
                    next_offset=adv.next_offset,
                )
                .on_conflict_do_nothing()
            )
        else:
            result = await conn.execute(
                update(consumer_offsets)
                .where(
                    and_(
                        consumer_offsets.c.group_id == group_id,
                        consumer_offsets.c.topic == adv.topic,
                        consumer_offsets.c.partition == adv.partition,
                        consumer_offsets.c.next_offset == adv.expected,
                    )
                )
                .values(next_offset=adv.next_offset)
            )
        if result.rowcount != 1:
            raise OffsetFenced(f"{adv.topic}[{adv.partition}] moved past {adv.expected}")
