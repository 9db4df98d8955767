"""Resetting the stage engine's derived state so the engines rebuild it from the event log.

Clears what the stage engine derived (customers, history, event log, identity links, dedupe
rows, unpublished outbox rows) and resets the group's stored offsets on the events topic to 0,
in one transaction. Running engines notice (their next offset compare-and-set fails, or their
idle re-check sees the reset), seek to the start and re-apply the whole log with the current
rules. Erasures are kept, so an erased customer's events stay dropped. Lifecycle records are
re-published with their stable ``record_id``s: the metrics service does not count them twice.
"""

from __future__ import annotations

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clm_common.schema import consumer_offsets

DERIVED = (
    "customers",
    "stage_transitions",
    "customer_events",
    "identity_links",
    "processed_events",
    "outbox",
)


async def reset_for_replay(conn: AsyncConnection, group_id: str, topic: str) -> int:
    """Clear the derived tables and point the group's stored offsets at 0; return partitions."""
    await conn.execute(text(f"TRUNCATE {', '.join(DERIVED)}"))
    result = await conn.execute(
        update(consumer_offsets)
        .where(consumer_offsets.c.group_id == group_id, consumer_offsets.c.topic == topic)
        .values(next_offset=0)
    )
    return int(result.rowcount)
